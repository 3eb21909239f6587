//! The policy stage of the request path.
//!
//! 1. Read what the rules need: the query, and the JSON body only on operations whose enabled
//!    rules read it (up to `server.max_policy_body_bytes`, else 413; malformed JSON is a 400).
//! 2. Evaluate the rules under both modes. When the two decisions agree, the app's mode does not
//!    matter and no lookup is made; otherwise the mode is resolved (cache, lookup, pin, or the
//!    project's shared mode), with the caller's credential verified first.
//! 3. Act: reject without calling upstream, rewrite (query parameter, body field, contact
//!    resolution; the body gets a correct `Content-Length`), or forward unchanged (shadow and
//!    forward). Every match is counted and logged.
//! 4. After the response: learn modes from app responses, forget them on PATCH / DELETE, and
//!    retry a DISPATCH app's message read once with `DISPATCH_SOURCE` after a 404.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::classify::{AppIdLocation, Classification, Operation};
use super::lookup::mode_of;
use super::request_id::RequestId;
use super::{GatewayResponse, GatewayState, OutboundBody, Outcome};
use crate::api_error::ApiError;
use crate::config::{AppOverride, PolicySettings, UnknownMode};
use crate::contact_cache::ContactOutcome;
use crate::error::GatewayError;
use crate::metrics::CacheResult;
use crate::mode_cache::{valid_id, Resolution};
use crate::policy::evaluate::{json_text, rule_applies_to};
use crate::policy::{
    apply_body_edits, evaluate, mode_label, what_if_blockers, Action, Decision, Disposition, Edit,
    PolicyContext, ProcessingMode, Query, Rejection, RequestFacts, RuleId,
};

/// Largest app response buffered to learn a mode from.
const MAX_LEARN_BODY: u64 = 1 << 20;

/// The policy settings in the shape the request path reads them.
#[derive(Debug)]
pub struct PolicyRuntime {
    /// As configured.
    pub settings: PolicySettings,
    apps: HashMap<String, usize>,
    /// Per project, the mode every pinned app of it shares, and one of those apps.
    pinned_projects: HashMap<String, Option<(ProcessingMode, String)>>,
    /// Per operation: whether some rule that may apply to it is enabled anywhere.
    relevant: Vec<bool>,
    /// Per operation: whether the body must be read.
    reads_body: Vec<bool>,
}

fn app_key(project: &str, app: &str) -> String {
    format!("{project}/{app}")
}

impl PolicyRuntime {
    /// Indexes `settings`.
    pub fn new(settings: PolicySettings) -> Self {
        let apps = settings
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| (app_key(&a.project_id, &a.app_id), i))
            .collect();
        let mut pinned_projects: HashMap<String, Option<(ProcessingMode, String)>> = HashMap::new();
        for a in &settings.apps {
            let Some(mode) = a.processing_mode else {
                continue;
            };
            pinned_projects
                .entry(a.project_id.clone())
                .and_modify(|tie| {
                    if tie.as_ref().is_some_and(|(m, _)| *m != mode) {
                        *tie = None;
                    }
                })
                .or_insert_with(|| Some((mode, a.app_id.clone())));
        }
        let rule_sets: Vec<_> = std::iter::once(&settings.rules)
            .chain(settings.apps.iter().map(|a| &a.rules))
            .collect();
        let enabled_for = |op: Operation| {
            RuleId::ALL.iter().any(|rule| {
                rule_applies_to(*rule, op)
                    && rule_sets.iter().any(|set| set.action(*rule) != Action::Off)
            })
        };
        let what_if = settings.what_if_dispatch;
        let relevant: Vec<bool> = Operation::ALL
            .iter()
            .map(|op| {
                enabled_for(*op)
                    || learns_from(*op)
                    || (what_if
                        && crate::policy::evaluate::DISPATCH_RULES
                            .iter()
                            .any(|r| rule_applies_to(*r, *op)))
            })
            .collect();
        let reads_body = Operation::ALL
            .iter()
            .map(|op| op.policy_reads_body() && relevant[op.index()])
            .collect();
        Self {
            settings,
            apps,
            pinned_projects,
            relevant,
            reads_body,
        }
    }

    /// Whether the policy stage has anything to do for `op`.
    pub fn relevant(&self, op: Operation) -> bool {
        self.relevant[op.index()]
    }

    /// The `[[policy.app]]` entry of an app.
    pub fn app(&self, project: &str, app: &str) -> Option<&AppOverride> {
        self.apps
            .get(&app_key(project, app))
            .map(|i| &self.settings.apps[*i])
    }

    /// Every `[[policy.app]]` with a pinned mode.
    pub fn pinned_apps(&self) -> impl Iterator<Item = &AppOverride> {
        self.settings
            .apps
            .iter()
            .filter(|a| a.processing_mode.is_some())
    }
}

/// App operations whose responses teach or invalidate the mode cache.
fn learns_from(op: Operation) -> bool {
    matches!(
        op,
        Operation::GetApp
            | Operation::ListApps
            | Operation::CreateApp
            | Operation::UpdateApp
            | Operation::DeleteApp
    )
}

fn is_json(headers: &http::HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(ct) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        }
    }
}

pub(super) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(GatewayError::BodyTooLarge { limit })
            } else {
                Err(GatewayError::ClientBody(e.to_string()))
            }
        }
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, GatewayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| GatewayError::InvalidBody {
        message: match e.classify() {
            serde_json::error::Category::Eof => "body: the JSON ends too early".to_string(),
            _ => format!(
                "body: not valid JSON (line {}, column {}): {}",
                e.line(),
                e.column(),
                reason(&e)
            ),
        },
    })?;
    if !value.is_object() {
        return Err(GatewayError::InvalidBody {
            message: "body: expected a JSON object".into(),
        });
    }
    Ok(value)
}

/// serde_json's reason without the position suffix (and never the offending input).
fn reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The ids a request names, owned so the request can be rebuilt.
struct Subject {
    project: Option<String>,
    app: Option<String>,
}

fn rejection_response(rejection: &Rejection) -> GatewayResponse {
    let mut response = ApiError::invalid_argument(rejection.message.clone())
        .with_detail(rejection.rule.as_str())
        .into_response()
        .map(Either::Right);
    response.extensions_mut().insert(Outcome {
        disposition: Disposition::Rejected,
        rule: Some(rejection.rule),
        error: false,
    });
    response
}

/// What the contact rewrite did.
enum ContactRewrite {
    Done,
    Reject(String),
    Untouched,
}

/// Replaces (or adds) one query parameter.
fn set_query_param(uri: &http::Uri, name: &str, value: &str) -> http::Uri {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k != name {
            query.append_pair(&k, &v);
        }
    }
    query.append_pair(name, value);
    with_query(uri, &query.finish())
}

/// Appends parameters to the query, leaving the existing ones byte for byte.
fn add_query_params(uri: &http::Uri, additions: &[(&str, &str)]) -> http::Uri {
    let mut query = uri.query().unwrap_or("").to_string();
    for (k, v) in additions {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish(),
        );
    }
    with_query(uri, &query)
}

fn with_query(uri: &http::Uri, query: &str) -> http::Uri {
    let mut parts = uri.clone().into_parts();
    let pq = format!("{}?{query}", uri.path());
    match http::uri::PathAndQuery::try_from(pq) {
        Ok(pq) => {
            parts.path_and_query = Some(pq);
            http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}

impl GatewayState {
    /// Runs the policy stage, then forwards.
    pub(super) async fn enforce(
        &self,
        policy: Arc<PolicyRuntime>,
        req: Request<Incoming>,
        class: Classification,
    ) -> Result<GatewayResponse, GatewayError> {
        let op = class.operation;
        let (mut parts, incoming) = req.into_parts();

        // 1. Facts.
        let (body, json) = if policy.reads_body[op.index()] {
            if !is_json(&parts.headers) {
                return Err(GatewayError::InvalidBody {
                    message: "content-type: this operation takes application/json".into(),
                });
            }
            let bytes = read_body(incoming, self.max_policy_body_bytes).await?;
            let json = if bytes.is_empty() {
                None
            } else {
                Some(parse_json(&bytes)?)
            };
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            (OutboundBody::Bytes(bytes), json)
        } else {
            (self.replayable(incoming).await?, None)
        };
        let path = parts.uri.path().to_string();
        let raw_query = parts.uri.query().map(str::to_string);
        let query = Query::parse(raw_query.as_deref());
        let subject = Subject {
            project: class
                .project_id(&path)
                .filter(|p| valid_id(p))
                .map(str::to_string),
            app: match op.app_id_location() {
                AppIdLocation::Path => class.path_app_id(&path).map(str::to_string),
                AppIdLocation::Query => query.get("app_id").map(str::to_string),
                AppIdLocation::Body => json
                    .as_ref()
                    .and_then(|j| json_text(j, "app_id"))
                    .map(str::to_string),
                AppIdLocation::None => None,
            }
            .filter(|a| valid_id(a)),
        };
        // Lookups authenticate as the caller (passthrough) or as the gateway (inject).
        let authorization = match &self.inject {
            Some(inject) => Some(inject.authorization().await?),
            None => parts.headers.get(header::AUTHORIZATION).cloned(),
        };
        let app_override = match (&subject.project, &subject.app) {
            (Some(p), Some(a)) => policy.app(p, a),
            _ => None,
        };
        let ctx = PolicyContext {
            rules: app_override.map_or(&policy.settings.rules, |o| &o.rules),
            create_app_default_mode: policy.settings.create_app_default_mode,
            max_ttl_days: policy.settings.max_ttl_days,
            allow_dispatch_only: app_override.is_some_and(|o| o.allow_dispatch_only),
        };
        let facts = RequestFacts {
            operation: op,
            query: &query,
            body: json.as_ref(),
        };

        // 2. Decide. Evaluating under both modes tells whether the mode matters at all.
        let as_conversation = evaluate(&facts, Some(ProcessingMode::Conversation), &ctx);
        let as_dispatch = evaluate(&facts, Some(ProcessingMode::Dispatch), &ctx);
        let blockers = if policy.settings.what_if_dispatch {
            what_if_blockers(&facts, &ctx)
        } else {
            Vec::new()
        };
        let retry_candidate = source_retry_candidate(op, &query, &ctx);
        let needs_mode = as_conversation != as_dispatch || !blockers.is_empty() || retry_candidate;
        let (decision, mode) = if needs_mode {
            let resolution = self
                .resolve_mode(&policy, &subject, app_override, authorization.as_ref())
                .await;
            match resolution {
                Resolution::Known(ProcessingMode::Conversation, _) => {
                    (as_conversation, Some(ProcessingMode::Conversation))
                }
                Resolution::Known(ProcessingMode::Dispatch, _) => {
                    (as_dispatch, Some(ProcessingMode::Dispatch))
                }
                Resolution::Untouched => (Decision::default(), None),
                Resolution::Unavailable => match policy.settings.unknown_mode {
                    UnknownMode::Reject => {
                        tracing::warn!(
                            operation = op.as_str(),
                            project_id = subject.project.as_deref().unwrap_or(""),
                            app_id = subject.app.as_deref().unwrap_or(""),
                            "processing mode unavailable; rejecting (unknown_mode = reject)"
                        );
                        return Err(GatewayError::ModeUnavailable);
                    }
                    UnknownMode::Forward => {
                        tracing::warn!(operation = op.as_str(), project_id = subject.project.as_deref().unwrap_or(""),
                            app_id = subject.app.as_deref().unwrap_or(""), "processing mode unavailable; applying mode-independent rules only (unknown_mode = forward)");
                        (evaluate(&facts, None, &ctx), None)
                    }
                },
            }
        } else {
            (as_conversation, None)
        };
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        let trace_id = parts.extensions.get::<super::observe::TraceId>().cloned();
        self.record(
            &decision,
            mode,
            &subject,
            op,
            request_id.as_ref(),
            trace_id.as_ref(),
        );
        if mode == Some(ProcessingMode::Conversation) {
            for rule in &blockers {
                self.metrics.migration_blocker(*rule);
                self.report.record(
                    subject.project.as_deref().unwrap_or("-"),
                    subject.app.as_deref().unwrap_or("-"),
                    *rule,
                );
            }
        }

        // 3. Act.
        if let Some(rejection) = &decision.reject {
            return Ok(rejection_response(rejection));
        }
        let mut outcome = Outcome {
            disposition: decision.disposition(),
            rule: decision.headline_rule(),
            error: false,
        };
        let mut body = body;
        if !decision.edits.is_empty() {
            let additions: Vec<_> = decision.query_additions().collect();
            if !additions.is_empty() {
                parts.uri = add_query_params(&parts.uri, &additions);
            }
            if let (true, Some(original)) = (decision.edits_body(), json.as_ref()) {
                let mut value = original.clone();
                apply_body_edits(&mut value, &decision.edits);
                let mut changed = true;
                if decision.edits.contains(&Edit::ResolveContactRecipient) {
                    match self
                        .rewrite_contact(&subject, &mut value, authorization.as_ref())
                        .await?
                    {
                        ContactRewrite::Done => {}
                        ContactRewrite::Reject(message) => {
                            return Ok(rejection_response(&Rejection {
                                rule: RuleId::SendContactRecipient,
                                message,
                            }));
                        }
                        ContactRewrite::Untouched => {
                            changed = false;
                            outcome = Outcome::default();
                        }
                    }
                }
                if changed {
                    let bytes = Bytes::from(serde_json::to_vec(&value).map_err(|e| {
                        GatewayError::InvalidBody {
                            message: format!("body: cannot be rewritten: {e}"),
                        }
                    })?);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    body = OutboundBody::Bytes(bytes);
                }
            }
        }

        // 4. Forward, then learn or retry.
        if let (Some(p), Some(a), Operation::UpdateApp | Operation::DeleteApp) =
            (&subject.project, &subject.app, op)
        {
            self.modes().forget(p, a).await;
        }
        let replay = (retry_candidate && mode == Some(ProcessingMode::Dispatch)).then(|| {
            let mut r = Request::new(());
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = set_query_param(&parts.uri, "messages_source", "DISPATCH_SOURCE");
            *r.headers_mut() = parts.headers.clone();
            r.extensions_mut().extend(parts.extensions.clone());
            r
        });
        let response = self.forward(parts, body, op, outcome).await?;
        if let (Some(replay), StatusCode::NOT_FOUND) = (replay, response.status()) {
            let retried = Decision {
                matches: vec![crate::policy::Match {
                    rule: RuleId::MessagesSource,
                    action: Action::Rewrite,
                }],
                ..Decision::default()
            };
            self.record(
                &retried,
                mode,
                &subject,
                op,
                request_id.as_ref(),
                trace_id.as_ref(),
            );
            let (parts, ()) = replay.into_parts();
            let outcome = Outcome {
                disposition: Disposition::Rewritten,
                rule: Some(RuleId::MessagesSource),
                error: false,
            };
            return self
                .forward(parts, OutboundBody::Bytes(Bytes::new()), op, outcome)
                .await;
        }
        self.learn_from(op, &subject, authorization.as_ref(), response)
            .await
    }

    /// Counts and logs every rule match of a decision.
    fn record(
        &self,
        decision: &Decision,
        mode: Option<ProcessingMode>,
        subject: &Subject,
        op: Operation,
        request_id: Option<&HeaderValue>,
        trace_id: Option<&super::observe::TraceId>,
    ) {
        let outcome = decision.disposition().as_str();
        for m in &decision.matches {
            self.metrics
                .policy_decision(m.rule, m.action, mode_label(mode));
            tracing::info!(
                target: "modegate::decision",
                decision_id = %crate::ids::hex_id(),
                request_id = request_id.and_then(|v| v.to_str().ok()).unwrap_or(""),
                trace_id = trace_id.map_or("", |t| t.0.as_str()),
                rule = m.rule.as_str(),
                action = m.action.as_str(),
                mode = mode_label(mode),
                project_id = subject.project.as_deref().unwrap_or(""),
                app_id = subject.app.as_deref().unwrap_or(""),
                operation = op.as_str(),
                outcome,
                "policy decision"
            );
        }
    }

    /// The mode for a request: its app's (pinned, cached or looked up), or for calls that name
    /// no app, the mode every pinned or known app of the project shares.
    async fn resolve_mode(
        &self,
        policy: &PolicyRuntime,
        subject: &Subject,
        app_override: Option<&AppOverride>,
        authorization: Option<&HeaderValue>,
    ) -> Resolution {
        let Some(project) = &subject.project else {
            return Resolution::Untouched;
        };
        if let Some(app) = &subject.app {
            let pinned = app_override.and_then(|o| o.processing_mode);
            return self
                .modes()
                .resolve(project, app, authorization, pinned, self.verify_credentials)
                .await;
        }
        let tie = policy
            .pinned_projects
            .get(project)
            .cloned()
            .flatten()
            .or_else(|| self.modes().project_mode(project));
        let Some((mode, sample_app)) = tie else {
            // Nothing ties the call to a mode: forwarded unchanged.
            return Resolution::Untouched;
        };
        if self.verify_credentials {
            match self
                .modes()
                .check_credential(project, &sample_app, authorization)
                .await
            {
                crate::mode_cache::CredentialCheck::Verified => {}
                crate::mode_cache::CredentialCheck::Refused => return Resolution::Untouched,
                crate::mode_cache::CredentialCheck::Unverifiable => return Resolution::Unavailable,
            }
        }
        Resolution::Known(mode, CacheResult::Hit)
    }

    /// Replaces `recipient.contact_id` with the contact's channel identities (only those on
    /// channels in `channel_priority_order`, in that order, when the request has one).
    async fn rewrite_contact(
        &self,
        subject: &Subject,
        body: &mut Value,
        authorization: Option<&HeaderValue>,
    ) -> Result<ContactRewrite, GatewayError> {
        let Some(project) = &subject.project else {
            return Ok(ContactRewrite::Untouched);
        };
        let Some(contact_id) = body
            .get("recipient")
            .and_then(|r| json_text(r, "contact_id"))
            .map(str::to_string)
        else {
            return Ok(ContactRewrite::Untouched);
        };
        if !valid_id(&contact_id) {
            return Ok(ContactRewrite::Reject(
                "recipient.contact_id: not a valid contact id; send with recipient.identified_by.channel_identities".into(),
            ));
        }
        match self.contacts.identities(project, &contact_id, authorization).await {
            ContactOutcome::Found(identities) => {
                let wanted: Option<Vec<String>> = body
                    .get("channel_priority_order")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
                let mut chosen: Vec<(usize, Value)> = identities
                    .iter()
                    .filter_map(|i| {
                        let rank = match &wanted {
                            Some(w) => w.iter().position(|c| *c == i.channel)?,
                            None => 0,
                        };
                        Some((rank, serde_json::json!({"channel": i.channel, "identity": i.identity})))
                    })
                    .collect();
                chosen.sort_by_key(|(rank, _)| *rank);
                if chosen.is_empty() {
                    let message = match wanted {
                        Some(w) => format!(
                            "recipient.contact_id: contact {contact_id} has no channel identity on {}; add one to the contact or send with recipient.identified_by.channel_identities",
                            w.join(", ")
                        ),
                        None => format!(
                            "recipient.contact_id: contact {contact_id} has no channel identities; add one to the contact or send with recipient.identified_by.channel_identities"
                        ),
                    };
                    return Ok(ContactRewrite::Reject(message));
                }
                let identities: Vec<Value> = chosen.into_iter().map(|(_, v)| v).collect();
                body["recipient"] = serde_json::json!({"identified_by": {"channel_identities": identities}});
                Ok(ContactRewrite::Done)
            }
            ContactOutcome::NotFound => Ok(ContactRewrite::Reject(format!(
                "recipient.contact_id: contact {contact_id} was not found in project {project}; send with recipient.identified_by.channel_identities"
            ))),
            ContactOutcome::Denied => Ok(ContactRewrite::Untouched),
            ContactOutcome::Failed(kind) => Err(GatewayError::Upstream {
                kind,
                detail: "contact lookup for the recipient rewrite failed".into(),
                attempted: Disposition::Rewritten,
            }),
        }
    }

    /// Learns modes from successful app responses (buffering those small bodies).
    async fn learn_from(
        &self,
        op: Operation,
        subject: &Subject,
        authorization: Option<&HeaderValue>,
        response: GatewayResponse,
    ) -> Result<GatewayResponse, GatewayError> {
        let learnable = matches!(
            op,
            Operation::GetApp | Operation::ListApps | Operation::CreateApp | Operation::UpdateApp
        );
        let small = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= MAX_LEARN_BODY);
        let Some(project) = subject.project.as_deref() else {
            return Ok(response);
        };
        if !learnable || response.status() != StatusCode::OK || !small {
            return Ok(response);
        }
        let (head, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| GatewayError::Upstream {
                kind: crate::metrics::UpstreamErrorKind::Reset,
                detail: format!("app response body: {e}"),
                attempted: head
                    .extensions
                    .get::<Outcome>()
                    .map_or(Disposition::Forwarded, |o| o.disposition),
            })?
            .to_bytes();
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let apps: Vec<&Value> = match op {
                Operation::ListApps => value
                    .get("apps")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().collect())
                    .unwrap_or_default(),
                _ => vec![&value],
            };
            for app in apps {
                let id = app
                    .get("id")
                    .and_then(Value::as_str)
                    .or(subject.app.as_deref());
                if let (Some(id), Some(mode)) = (id, mode_of(app)) {
                    self.modes().learn(project, id, mode, authorization).await;
                }
            }
        }
        Ok(GatewayResponse::from_parts(
            head,
            Either::Right(Full::new(bytes)),
        ))
    }
}

/// Whether a message read may need the one-time `DISPATCH_SOURCE` retry: the Node SDK names
/// `CONVERSATION_SOURCE` explicitly on get / delete, which misses DISPATCH-mode messages.
fn source_retry_candidate(op: Operation, query: &Query<'_>, ctx: &PolicyContext<'_>) -> bool {
    matches!(op, Operation::GetMessage | Operation::DeleteMessage)
        && query.get("messages_source") == Some("CONVERSATION_SOURCE")
        && ctx.rules.action(RuleId::MessagesSource) == Action::Rewrite
}
