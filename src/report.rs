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
            if current.as_ref().map_or(true, |(cp, ca)| cp != p || ca != a) {
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
    }
}
