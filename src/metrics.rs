//! Every metric the gateway exports, on one explicit [`Registry`].
//!
//! Label values are `&'static str` from closed sets (operations, decisions, rules, modes), so
//! cardinality is bounded by construction. Per-operation series are resolved once at start-up
//! and indexed by [`Operation::index`], so the request path never hashes a label set.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use crate::domain::{CacheResult, UpstreamErrorKind};
use crate::domain::{Operation, ProcessingMode};
use crate::policy::{Action, RuleId};

/// Latency buckets (seconds): fine below a millisecond, where a proxy's own cost lives, and wide
/// enough for slow upstream calls.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// How a request ended, as counted in `modegate_requests_total{decision}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionLabel {
    /// Forwarded unchanged.
    Forwarded,
    /// Rewritten, then forwarded.
    Rewritten,
    /// Rejected by a rule.
    Rejected,
    /// A rule matched in shadow; forwarded unchanged.
    Shadow,
    /// The gateway could not complete the request (upstream failure, bad framing, …).
    Error,
}

impl DecisionLabel {
    /// All labels.
    pub const ALL: [DecisionLabel; 5] = [
        DecisionLabel::Forwarded,
        DecisionLabel::Rewritten,
        DecisionLabel::Rejected,
        DecisionLabel::Shadow,
        DecisionLabel::Error,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecisionLabel::Forwarded => "forwarded",
            DecisionLabel::Rewritten => "rewritten",
            DecisionLabel::Rejected => "rejected",
            DecisionLabel::Shadow => "shadow",
            DecisionLabel::Error => "error",
        }
    }
}

/// How one callback ended, as counted in `modegate_callbacks_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallbackOutcome {
    /// Verified (or signed) and delivered: the target answered 2xx.
    Forwarded,
    /// Delivered with pseudo ids filled in.
    Filled,
    /// Delivered byte for byte from a webhook without a secret.
    Unsigned,
    /// Signature headers missing or not matching the body.
    BadSignature,
    /// Timestamp outside the window.
    Stale,
    /// Nonce already seen (or in flight).
    Replayed,
    /// The target was unreachable, slow, or answered other than 2xx.
    TargetError,
    /// The shared replay cache could not be asked; refused 503 so the sender retries.
    Unavailable,
}

impl CallbackOutcome {
    /// All outcomes.
    pub const ALL: [CallbackOutcome; 8] = [
        CallbackOutcome::Forwarded,
        CallbackOutcome::Filled,
        CallbackOutcome::Unsigned,
        CallbackOutcome::BadSignature,
        CallbackOutcome::Stale,
        CallbackOutcome::Replayed,
        CallbackOutcome::TargetError,
        CallbackOutcome::Unavailable,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Forwarded => "forwarded",
            CallbackOutcome::Filled => "filled",
            CallbackOutcome::Unsigned => "unsigned",
            CallbackOutcome::BadSignature => "bad_signature",
            CallbackOutcome::Stale => "stale",
            CallbackOutcome::Replayed => "replayed",
            CallbackOutcome::TargetError => "target_error",
            CallbackOutcome::Unavailable => "unavailable",
        }
    }
}

struct PerOperation {
    requests: [IntCounter; DecisionLabel::ALL.len()],
    request_duration: Histogram,
    upstream_duration: Histogram,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    per_operation: Vec<PerOperation>,
    policy_decisions: IntCounterVec,
    migration_blockers: IntCounterVec,
    mode_cache_lookups: IntCounterVec,
    mode_cache_apps: IntGaugeVec,
    upstream_errors: IntCounterVec,
    config_reloads: IntCounterVec,
    body_idle_timeouts: IntCounterVec,
    shared_cache_errors: IntCounterVec,
    batch_recipients: IntCounterVec,
    connections_closed: IntCounterVec,
    callbacks: [IntCounter; CallbackOutcome::ALL.len()],
    callback_duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
    // Names are fixed and unique within this struct, so registration cannot collide.
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric registration: {e}"));
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(registry, c)
}

fn histogram_vec(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        &["operation"],
    )
    .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(registry, h)
}

impl Metrics {
    /// Creates every metric on a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "modegate_requests_total",
            "Requests handled, by API operation and gateway decision.",
            &["operation", "decision"],
        );
        let request_duration = histogram_vec(
            &registry,
            "modegate_request_duration_seconds",
            "Time from request head to response head at the gateway, by operation.",
        );
        let upstream_duration = histogram_vec(
            &registry,
            "modegate_upstream_duration_seconds",
            "Time the upstream took to answer with a response head, by operation.",
        );
        let per_operation = Operation::ALL
            .iter()
            .map(|op| PerOperation {
                requests: DecisionLabel::ALL
                    .map(|d| requests.with_label_values(&[op.as_str(), d.as_str()])),
                request_duration: request_duration.with_label_values(&[op.as_str()]),
                upstream_duration: upstream_duration.with_label_values(&[op.as_str()]),
            })
            .collect();
        let policy_decisions = counter_vec(
            &registry,
            "modegate_policy_decisions_total",
            "Rule matches, by rule, the action taken, and the app's processing mode.",
            &["rule", "action", "mode"],
        );
        let migration_blockers = counter_vec(
            &registry,
            "modegate_migration_blockers_total",
            "Requests on CONVERSATION apps that a DISPATCH rule would have blocked or changed.",
            &["rule"],
        );
        let mode_cache_lookups = counter_vec(
            &registry,
            "modegate_mode_cache_lookups_total",
            "Processing-mode cache lookups, by result.",
            &["result"],
        );
        let mode_cache_apps = IntGaugeVec::new(
            Opts::new(
                "modegate_mode_cache_apps",
                "Apps whose mode is cached, by mode.",
            ),
            &["mode"],
        )
        .unwrap_or_else(|e| unreachable!("metric: {e}"));
        let mode_cache_apps = register(&registry, mode_cache_apps);
        for mode in ProcessingMode::ALL {
            mode_cache_apps.with_label_values(&[mode.as_str()]).set(0);
        }
        let upstream_errors = counter_vec(
            &registry,
            "modegate_upstream_errors_total",
            "Upstream failures, by kind.",
            &["kind"],
        );
        for kind in UpstreamErrorKind::ALL {
            upstream_errors.with_label_values(&[kind.as_str()]);
        }
        let body_idle_timeouts = counter_vec(
            &registry,
            "modegate_body_idle_timeouts_total",
            "Bodies abandoned after making no progress for server.body_idle_timeout_secs, by direction.",
            &["direction"],
        );
        for direction in ["request", "response"] {
            body_idle_timeouts.with_label_values(&[direction]);
        }
        let connections_closed = counter_vec(
            &registry,
            "modegate_connections_closed_total",
            "Client connections the gateway closed, by why.",
            &["reason"],
        );
        for reason in crate::server::CloseReason::ALL {
            connections_closed.with_label_values(&[reason.as_str()]);
        }
        let shared_cache_errors = counter_vec(
            &registry,
            "modegate_shared_cache_errors_total",
            "Shared mode cache (Redis) operations that failed, timed out or read garbage, by operation; the replica used its own cache instead.",
            &["op"],
        );
        for op in crate::domain::SharedCacheOp::ALL {
            shared_cache_errors.with_label_values(&[op.as_str()]);
        }
        let config_reloads = counter_vec(
            &registry,
            "modegate_config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        );
        // Every bounded label set starts at zero, so dashboards and alerts see each family (and
        // a rate of 0) from the first scrape rather than only after the first event.
        for rule in RuleId::ALL {
            for action in [Action::Enforce, Action::Rewrite, Action::Shadow] {
                if rule.supports(action) {
                    for mode in ["CONVERSATION", "DISPATCH", "unknown"] {
                        policy_decisions.with_label_values(&[rule.as_str(), action.as_str(), mode]);
                    }
                }
            }
        }
        for rule in crate::policy::evaluate::dispatch_rules() {
            migration_blockers.with_label_values(&[rule.as_str()]);
        }
        for result in CacheResult::ALL {
            mode_cache_lookups.with_label_values(&[result.as_str()]);
        }
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        let batch_recipients = counter_vec(
            &registry,
            "modegate_batch_recipients_total",
            "Recipients of Batch API sends, by what the gateway did with each: forwarded, rewritten, rejected.",
            &["outcome"],
        );
        for outcome in ["forwarded", "rewritten", "rejected"] {
            batch_recipients.with_label_values(&[outcome]);
        }
        let callbacks = counter_vec(
            &registry,
            "modegate_callbacks_total",
            "Callbacks received on the callback listener, by outcome.",
            &["outcome"],
        );
        let callbacks = CallbackOutcome::ALL.map(|o| callbacks.with_label_values(&[o.as_str()]));
        let callback_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "modegate_callback_duration_seconds",
                    "Time from a callback's request head to the answer (the target's included).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .unwrap_or_else(|e| unreachable!("metric: {e}")),
        );
        let build_info = IntGaugeVec::new(
            Opts::new("modegate_build_info", "Build information; always 1."),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable!("metric: {e}"));
        let build_info = register(&registry, build_info);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            registry,
            per_operation,
            policy_decisions,
            migration_blockers,
            mode_cache_lookups,
            mode_cache_apps,
            upstream_errors,
            config_reloads,
            body_idle_timeouts,
            shared_cache_errors,
            batch_recipients,
            connections_closed,
            callbacks,
            callback_duration,
        }
    }

    /// Counts `n` recipients of a batch send with `outcome` (`forwarded`, `rewritten`,
    /// `rejected`).
    pub fn batch_recipients(&self, outcome: &str, n: usize) {
        if n > 0 {
            self.batch_recipients
                .with_label_values(&[outcome])
                .inc_by(n as u64);
        }
    }

    /// Records one finished callback (called exactly once per callback).
    pub fn record_callback(&self, outcome: CallbackOutcome, seconds: f64) {
        self.callbacks[outcome as usize].inc();
        self.callback_duration.observe(seconds);
    }

    /// Records one finished request (called exactly once per request).
    pub fn record_request(&self, op: Operation, decision: DecisionLabel, seconds: f64) {
        let m = &self.per_operation[op.index()];
        m.requests[decision as usize].inc();
        m.request_duration.observe(seconds);
    }

    /// Records the upstream's time to response head.
    pub fn record_upstream(&self, op: Operation, seconds: f64) {
        self.per_operation[op.index()]
            .upstream_duration
            .observe(seconds);
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts a rule match (`mode` is `CONVERSATION`, `DISPATCH` or `unknown`).
    pub fn policy_decision(&self, rule: RuleId, action: Action, mode: &'static str) {
        self.policy_decisions
            .with_label_values(&[rule.as_str(), action.as_str(), mode])
            .inc();
    }

    /// Counts a migration blocker.
    pub fn migration_blocker(&self, rule: RuleId) {
        self.migration_blockers
            .with_label_values(&[rule.as_str()])
            .inc();
    }

    /// Counts a mode-cache lookup.
    pub fn cache_lookup(&self, result: CacheResult) {
        self.mode_cache_lookups
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Moves the cached-apps gauge for one mode.
    pub fn add_cached_apps(&self, mode: ProcessingMode, delta: i64) {
        self.mode_cache_apps
            .with_label_values(&[mode.as_str()])
            .add(delta);
    }

    /// Counts a failed shared mode cache operation (`op`: `get`, `set`, `publish`, `subscribe`).
    pub fn shared_cache_error(&self, op: &'static str) {
        self.shared_cache_errors.with_label_values(&[op]).inc();
    }

    /// Counts one client connection the gateway closed.
    pub fn connection_closed(&self, reason: crate::server::CloseReason) {
        self.connections_closed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// What a listener calls for each connection the gateway closes: counts it.
    pub fn on_close(metrics: &std::sync::Arc<Metrics>) -> crate::server::OnClose {
        let metrics = metrics.clone();
        std::sync::Arc::new(move |reason| metrics.connection_closed(reason))
    }

    /// Counts one body abandoned for making no progress (`direction`: `request`, `response`).
    pub fn body_idle_timeout(&self, direction: &'static str) {
        self.body_idle_timeouts
            .with_label_values(&[direction])
            .inc();
    }

    /// A config reload, by result.
    pub fn config_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The registry (for tests and embedding).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The sum of every sample of `name` whose labels include `labels` (one sample when the labels
/// are complete), e.g. `sample(&text, "modegate_requests_total", &[("operation","other")])`.
/// `None` when no series matches. For tests and tooling.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if metric != name
            || !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_metric_is_exported() {
        let m = Metrics::new();
        m.record_request(Operation::SendMessage, DecisionLabel::Rejected, 0.001);
        m.policy_decision(RuleId::SendContactRecipient, Action::Enforce, "DISPATCH");
        m.migration_blocker(RuleId::SendContactRecipient);
        m.cache_lookup(CacheResult::Hit);
        m.upstream_error(UpstreamErrorKind::Connect);
        m.record_upstream(Operation::SendMessage, 0.002);
        let text = m.render();
        for name in [
            "modegate_requests_total",
            "modegate_request_duration_seconds",
            "modegate_upstream_duration_seconds",
            "modegate_policy_decisions_total",
            "modegate_migration_blockers_total",
            "modegate_mode_cache_lookups_total",
            "modegate_mode_cache_apps",
            "modegate_upstream_errors_total",
            "modegate_build_info",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert_eq!(
            sample(
                &text,
                "modegate_requests_total",
                &[("operation", "send_message"), ("decision", "rejected")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "modegate_upstream_errors_total",
                &[("kind", "connect")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "modegate_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn decision_labels_index_their_array() {
        for (i, d) in DecisionLabel::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
    }
}
