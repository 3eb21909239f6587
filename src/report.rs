//! The migration report: per CONVERSATION app, how many requests would have been refused or
//! rewritten had the app been in DISPATCH mode (`policy.what_if_mode = "DISPATCH"`), and per
//! DISPATCH rule whether it would refuse or rewrite them.
//!
//! One request counts once per app, however many rules it trips: as refused when any of them
//! would refuse it (the blockers), else as rewritten. What a rule would do is the action in
//! force for the app: `rewrite` rewrites; `enforce` refuses, and so does the API itself when
//! the rule is in `shadow` or `off`, since these are the API's own DISPATCH restrictions.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::policy::{Action, RuleId};

/// Most rows kept (apps and their rules together); later new rows are dropped (and counted).
const MAX_ROWS: usize = 10_000;

/// What a DISPATCH rule would do to a request of a CONVERSATION app moved to DISPATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Would {
    /// The request would fail: the gateway (enforce) or the API would refuse it.
    Refuse,
    /// The gateway would rewrite it so that it works.
    Rewrite,
}

impl Would {
    /// What a rule with `action` in force would do.
    pub fn from_action(action: Action) -> Would {
        if action == Action::Rewrite {
            Would::Rewrite
        } else {
            Would::Refuse
        }
    }

    /// The report's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Would::Refuse => "refuse",
            Would::Rewrite => "rewrite",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    count: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
}

impl Seen {
    fn new(now: SystemTime) -> Seen {
        Seen {
            count: 0,
            first_seen: now,
            last_seen: now,
        }
    }

    fn add(&mut self, now: SystemTime) {
        self.count += 1;
        self.last_seen = now;
    }
}

#[derive(Debug)]
struct AppRow {
    requests: Seen,
    refused: u64,
    rewritten: u64,
    rules: BTreeMap<RuleId, (Seen, Would)>,
}

#[derive(Debug, Default)]
struct Rows {
    apps: BTreeMap<(String, String), AppRow>,
    rows: usize,
    dropped: u64,
}

/// The report.
#[derive(Debug, Default)]
pub struct MigrationReport {
    inner: Mutex<Rows>,
}

impl MigrationReport {
    /// Records one request and what each DISPATCH rule it trips would do to it.
    pub fn record(&self, project: &str, app: &str, findings: &[(RuleId, Would)]) {
        if findings.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        let key = (project.to_string(), app.to_string());
        if !inner.apps.contains_key(&key) {
            if inner.rows >= MAX_ROWS {
                inner.dropped += 1;
                return;
            }
            inner.rows += 1;
            inner.apps.insert(
                key.clone(),
                AppRow {
                    requests: Seen::new(now),
                    refused: 0,
                    rewritten: 0,
                    rules: BTreeMap::new(),
                },
            );
        }
        let Some(row) = inner.apps.get_mut(&key) else {
            return;
        };
        row.requests.add(now);
        if findings.iter().any(|(_, w)| *w == Would::Refuse) {
            row.refused += 1;
        } else {
            row.rewritten += 1;
        }
        for &(rule, would) in findings {
            if let Some((seen, last)) = row.rules.get_mut(&rule) {
                seen.add(now);
                *last = would;
            } else if inner.rows < MAX_ROWS {
                inner.rows += 1;
                let mut seen = Seen::new(now);
                seen.add(now);
                row.rules.insert(rule, (seen, would));
            } else {
                inner.dropped += 1;
            }
        }
    }

    /// The JSON answer of `GET /report/migration`.
    pub fn to_json(&self, what_if_enabled: bool) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let apps: Vec<Value> = inner
            .apps
            .iter()
            .map(|((project, app), row)| {
                let rules: Vec<Value> = row
                    .rules
                    .iter()
                    .map(|(rule, (seen, would))| {
                        json!({
                            "rule": rule.as_str(),
                            "would": would.as_str(),
                            "count": seen.count,
                            "first_seen": time(seen.first_seen),
                            "last_seen": time(seen.last_seen),
                        })
                    })
                    .collect();
                json!({
                    "project_id": project,
                    "app_id": app,
                    "requests": row.requests.count,
                    "would_refuse": row.refused,
                    "would_rewrite": row.rewritten,
                    "first_seen": time(row.requests.first_seen),
                    "last_seen": time(row.requests.last_seen),
                    "rules": rules,
                })
            })
            .collect();
        json!({
            "what_if_mode": if what_if_enabled { "DISPATCH" } else { "off" },
            "apps": apps,
            "rows_dropped": inner.dropped,
        })
    }
}

/// Lays out `rows` under `header`, columns as wide as their widest cell.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
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
    let mut out = line(header);
    for r in rows {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// The report as tables for people (`modegate report`): one row per app (its requests, how many
/// would be refused, how many rewritten), then one per app and rule.
pub fn render_table(report: &Value) -> String {
    let mut out = String::new();
    let mode = report["what_if_mode"].as_str().unwrap_or("off");
    out.push_str(&format!("what-if mode: {mode}\n"));
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let number = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let apps: Vec<&Value> = report["apps"].as_array().into_iter().flatten().collect();
    if apps.is_empty() {
        out.push_str(if mode == "off" {
            "no report: set policy.what_if_mode = \"DISPATCH\" to record what would break\n"
        } else {
            "no request so far would be refused or rewritten if its app were in DISPATCH mode\n"
        });
        return out;
    }
    let app_rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                text(&a["project_id"]),
                text(&a["app_id"]),
                number(&a["requests"]),
                number(&a["would_refuse"]),
                number(&a["would_rewrite"]),
                text(&a["last_seen"]),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "PROJECT",
            "APP",
            "REQUESTS",
            "WOULD BE REFUSED",
            "WOULD BE REWRITTEN",
            "LAST SEEN",
        ],
        &app_rows,
    ));
    let rule_rows: Vec<Vec<String>> = apps
        .iter()
        .flat_map(|a| {
            a["rules"].as_array().into_iter().flatten().map(move |r| {
                vec![
                    text(&a["project_id"]),
                    text(&a["app_id"]),
                    text(&r["rule"]),
                    text(&r["would"]),
                    number(&r["count"]),
                ]
            })
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &["PROJECT", "APP", "RULE", "WOULD", "REQUESTS"],
        &rule_rows,
    ));
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

    const REFUSE: Would = Would::Refuse;
    const REWRITE: Would = Would::Rewrite;

    #[test]
    fn one_request_counts_once_however_many_rules_it_trips() {
        let r = MigrationReport::default();
        // A list by contact: refused (contact filter) and rewritten (messages source) at once.
        let list_by_contact = [
            (RuleId::ListMessagesContactFilter, REFUSE),
            (RuleId::MessagesSource, REWRITE),
        ];
        r.record("p", "a", &list_by_contact);
        r.record("p", "a", &list_by_contact);
        r.record("p", "a", &[(RuleId::MessagesSource, REWRITE)]);
        r.record("p", "b", &[(RuleId::ConversationOnlyEndpoint, REFUSE)]);
        r.record("p", "c", &[]);
        let v = r.to_json(true);
        assert_eq!(v["what_if_mode"], "DISPATCH");
        let apps = v["apps"].as_array().expect("apps");
        assert_eq!(apps.len(), 2, "a request that trips nothing is no row: {v}");
        let a = &apps[0];
        assert_eq!(a["app_id"], "a");
        assert_eq!(a["requests"], 3);
        assert_eq!(a["would_refuse"], 2);
        assert_eq!(a["would_rewrite"], 1);
        assert!(a["first_seen"].is_string());
        let rules = a["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        let find = |id: &str| {
            rules
                .iter()
                .find(|x| x["rule"] == id)
                .unwrap_or_else(|| panic!("{id} in {v}"))
        };
        assert_eq!(find("dispatch.list_messages.contact_filter")["count"], 2);
        assert_eq!(
            find("dispatch.list_messages.contact_filter")["would"],
            "refuse"
        );
        assert_eq!(find("dispatch.messages_source")["count"], 3);
        assert_eq!(find("dispatch.messages_source")["would"], "rewrite");
        assert_eq!(apps[1]["requests"], 1);
        assert_eq!(apps[1]["would_refuse"], 1);
        assert_eq!(apps[1]["would_rewrite"], 0);

        let table = render_table(&v);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "what-if mode: DISPATCH");
        assert!(
            lines[1].starts_with("PROJECT  APP  REQUESTS  WOULD BE REFUSED  WOULD BE REWRITTEN"),
            "{table}"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells[..5], ["p", "a", "3", "2", "1"], "{table}");
        assert!(lines[5].starts_with("PROJECT  APP  RULE"), "{table}");
        assert!(
            lines.iter().any(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c == [
                    "p",
                    "a",
                    "dispatch.list_messages.contact_filter",
                    "refuse",
                    "2",
                ]
            }),
            "{table}"
        );
        assert_eq!(lines.len(), 9, "{table}");
    }

    #[test]
    fn what_a_rule_would_do_follows_the_action_in_force() {
        assert_eq!(Would::from_action(Action::Rewrite), Would::Rewrite);
        for action in [Action::Enforce, Action::Shadow, Action::Off] {
            assert_eq!(Would::from_action(action), Would::Refuse, "{action:?}");
        }
    }

    #[test]
    fn rows_beyond_the_cap_are_dropped_and_counted() {
        let r = MigrationReport::default();
        for i in 0..MAX_ROWS + 5 {
            r.record(
                "p",
                &format!("app-{i}"),
                &[(RuleId::MessagesSource, REWRITE)],
            );
        }
        let v = r.to_json(true);
        let apps = v["apps"].as_array().expect("apps");
        // Each app takes two rows (itself and its one rule).
        assert_eq!(apps.len(), MAX_ROWS / 2);
        assert!(v["rows_dropped"].as_u64().expect("dropped") >= 5);
    }

    #[test]
    fn an_empty_report_says_why() {
        let r = MigrationReport::default();
        assert!(render_table(&r.to_json(false)).contains("policy.what_if_mode"));
        assert!(render_table(&r.to_json(true)).contains("no request so far"));
    }
}
