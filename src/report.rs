//! The migration report: per CONVERSATION app and DISPATCH rule, how many requests would have
//! broken had the app been in DISPATCH mode (`policy.what_if_mode = "DISPATCH"`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::policy::RuleId;

/// Most (app, rule) rows kept; later new rows are dropped (and counted).
const MAX_ROWS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Row {
    count: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
}

#[derive(Debug, Default)]
struct Rows {
    rows: BTreeMap<(String, String, RuleId), Row>,
    dropped: u64,
}

/// The report.
#[derive(Debug, Default)]
pub struct MigrationReport {
    inner: Mutex<Rows>,
}

impl MigrationReport {
    /// Records one blocker.
    pub fn record(&self, project: &str, app: &str, rule: RuleId) {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (project.to_string(), app.to_string(), rule);
        if let Some(row) = inner.rows.get_mut(&key) {
            row.count += 1;
            row.last_seen = now;
        } else if inner.rows.len() < MAX_ROWS {
            inner.rows.insert(
                key,
                Row {
                    count: 1,
                    first_seen: now,
                    last_seen: now,
                },
            );
        } else {
            inner.dropped += 1;
        }
    }

    /// The JSON answer of `GET /report/migration`.
    pub fn to_json(&self, what_if_enabled: bool) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut apps: Vec<Value> = Vec::new();
        let mut current: Option<(String, String)> = None;
        let mut rules: Vec<Value> = Vec::new();
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let flush = |apps: &mut Vec<Value>,
                     current: &Option<(String, String)>,
                     rules: &mut Vec<Value>| {
            if let Some((p, a)) = current {
                let total: u64 = rules.iter().filter_map(|r| r["count"].as_u64()).sum();
                apps.push(json!({"project_id": p, "app_id": a, "would_break": total, "rules": std::mem::take(rules)}));
            }
        };
        for ((p, a, rule), row) in &inner.rows {
            if current.as_ref().is_none_or(|(cp, ca)| cp != p || ca != a) {
                flush(&mut apps, &current, &mut rules);
                current = Some((p.clone(), a.clone()));
            }
            rules.push(json!({
                "rule": rule.as_str(),
                "count": row.count,
                "first_seen": time(row.first_seen),
                "last_seen": time(row.last_seen),
            }));
        }
        flush(&mut apps, &current, &mut rules);
        json!({
            "what_if_mode": if what_if_enabled { "DISPATCH" } else { "off" },
            "apps": apps,
            "rows_dropped": inner.dropped,
        })
    }
}

/// The report as a table for people (`modegate report`): one row per app and rule.
pub fn render_table(report: &Value) -> String {
    let mut out = String::new();
    let mode = report["what_if_mode"].as_str().unwrap_or("off");
    out.push_str(&format!("what-if mode: {mode}\n"));
    let mut rows: Vec<[String; 5]> = Vec::new();
    for app in report["apps"].as_array().into_iter().flatten() {
        for rule in app["rules"].as_array().into_iter().flatten() {
            rows.push([
                app["project_id"].as_str().unwrap_or("").to_string(),
                app["app_id"].as_str().unwrap_or("").to_string(),
                rule["rule"].as_str().unwrap_or("").to_string(),
                rule["count"].as_u64().unwrap_or(0).to_string(),
                rule["last_seen"].as_str().unwrap_or("").to_string(),
            ]);
        }
    }
    if rows.is_empty() {
        out.push_str(if mode == "off" {
            "no report: set policy.what_if_mode = \"DISPATCH\" to record what would break\n"
        } else {
            "no request so far would break if its app were in DISPATCH mode\n"
        });
        return out;
    }
    let header = ["PROJECT", "APP", "RULE", "WOULD BREAK", "LAST SEEN"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain(std::iter::once(header[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    out.push_str(&line(&header));
    for r in &rows {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    let dropped = report["rows_dropped"].as_u64().unwrap_or(0);
    if dropped > 0 {
        out.push_str(&format!("({dropped} further rows were not kept)\n"));
    }
    out
}

/// Fetches `GET {admin}/report/migration` from a running gateway and renders it as a table.
pub async fn fetch_table(admin: &str) -> Result<String, String> {
    use http_body_util::BodyExt;
    let base = admin.trim_end_matches('/');
    let uri: http::Uri = format!("{base}/report/migration")
        .parse()
        .map_err(|_| format!("{admin:?} is not an http:// admin address"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{admin:?}: the admin listener speaks plain http://"
        ));
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| format!("{base} did not answer within 10 s"))?
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the report: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{base}/report/migration answered {status}"));
    }
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| "the report is not JSON".to_string())?;
    Ok(render_table(&value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_by_app_and_count() {
        let r = MigrationReport::default();
        r.record("p", "a", RuleId::SendContactRecipient);
        r.record("p", "a", RuleId::SendContactRecipient);
        r.record("p", "a", RuleId::MessagesSource);
        r.record("p", "b", RuleId::ConversationOnlyEndpoint);
        let v = r.to_json(true);
        assert_eq!(v["what_if_mode"], "DISPATCH");
        let apps = v["apps"].as_array().expect("apps");
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0]["app_id"], "a");
        assert_eq!(apps[0]["would_break"], 3);
        assert_eq!(
            apps[0]["rules"][0]["rule"],
            "dispatch.send.contact_recipient"
        );
        assert_eq!(apps[0]["rules"][0]["count"], 2);
        assert!(apps[0]["rules"][0]["first_seen"].is_string());
        assert_eq!(
            apps[1]["rules"][0]["rule"],
            "dispatch.conversation_only_endpoint"
        );
        let table = render_table(&v);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "what-if mode: DISPATCH");
        assert!(lines[1].starts_with("PROJECT  APP  RULE"), "{table}");
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[2].contains("dispatch.send.contact_recipient") && lines[2].contains(" 2 "));
    }

    #[test]
    fn an_empty_report_says_why() {
        let r = MigrationReport::default();
        assert!(render_table(&r.to_json(false)).contains("policy.what_if_mode"));
        assert!(render_table(&r.to_json(true)).contains("no request so far"));
    }
}
