//! The deployment assets speak of metrics the binary really exports.

use std::collections::BTreeSet;
use std::path::Path;

use modegate::metrics::Metrics;

/// Every `modegate_…` identifier in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("modegate_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The families the binary exports (names from `# TYPE` lines).
fn exported() -> BTreeSet<String> {
    let m = Metrics::new();
    m.render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn family(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn check(file: &str) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect(file);
    let named = metric_names(&text);
    let exported = exported();
    let unknown: Vec<_> = named
        .iter()
        .filter(|n| !exported.contains(family(n)))
        .collect();
    assert!(
        unknown.is_empty(),
        "{file} names metrics the binary does not export: {unknown:?}"
    );
    named
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let named = check("deploy/prometheus/alerts.yml");
    for expected in [
        "modegate_upstream_errors_total",
        "modegate_request_duration_seconds_bucket",
        "modegate_mode_cache_lookups_total",
        "modegate_requests_total",
        "modegate_config_reloads_total",
    ] {
        assert!(named.contains(expected), "alerts.yml should use {expected}");
    }
}

#[test]
fn dashboard_names_only_exported_metrics() {
    let named = check("deploy/grafana/modegate-dashboard.json");
    assert!(named.len() >= 8, "{named:?}");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/modegate-dashboard.json"),
    )
    .expect("dashboard");
    let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(v["panels"].as_array().is_some_and(|p| p.len() >= 8));
}

#[test]
fn readme_metrics_table_matches_the_binary() {
    let named = check("README.md");
    for exported in exported() {
        assert!(
            named.contains(&exported),
            "README does not document {exported}"
        );
    }
}

#[test]
fn the_scanner_finds_names() {
    let names =
        metric_names("rate(modegate_requests_total[5m]) / x_modegate_fake + modegate_a_bucket");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["modegate_a_bucket", "modegate_requests_total"]
    );
}

#[test]
fn the_shared_cache_config_is_the_egress_config_plus_its_key() {
    let read = |file: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect(file)
    };
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let egress = settings(&read("deploy/kubernetes/egress/modegate.toml"));
    let mut shared = settings(&read("deploy/kubernetes/egress/shared-cache/modegate.toml"));
    let at = shared
        .iter()
        .position(|l| l == "redis_url_env = \"MODEGATE_REDIS_URL\"")
        .expect("the component sets mode_cache.redis_url_env");
    shared.remove(at);
    assert_eq!(
        shared, egress,
        "shared-cache/modegate.toml must be the egress file plus redis_url_env: keep the two in step"
    );
}
