//! The rules of a Batch API send (`batch_send`), pure: the batch's own limits
//! (`batch.recipients.range`, `batch.send_after.range`, `batch.reserved_metadata`) and the
//! per-recipient facts the single-send rules read on a batch (which recipients name a
//! `contact_id`, which carry `conversation_metadata`). Every message names the offending
//! recipients by index (`recipient_and_params[3].recipient.contact_id`) and the fix.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::fields;

/// Most recipients a batch takes.
pub const MAX_RECIPIENTS: usize = 1000;
/// How far ahead `send_after` may be.
pub const MAX_SEND_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// The metadata key the Batch API reserves (and overwrites) in both metadata maps.
pub const RESERVED_KEY: &str = "_batch_id";

/// The `recipient_and_params` array of a batch body.
pub fn recipients(body: &Value) -> Option<&Vec<Value>> {
    fields::get(body, "recipient_and_params").and_then(Value::as_array)
}

/// How many recipients a batch body names (0 when it names none or is not a batch).
pub fn recipient_count(body: Option<&Value>) -> usize {
    body.and_then(recipients).map_or(0, Vec::len)
}

/// The indices of the recipients addressed by `recipient.contact_id`.
pub fn contact_recipients(body: &Value) -> Vec<usize> {
    recipients(body).map_or_else(Vec::new, |list| {
        list.iter()
            .enumerate()
            .filter(|(_, r)| {
                fields::get(r, "recipient")
                    .and_then(|to| fields::text(to, "contact_id"))
                    .is_some()
            })
            .map(|(i, _)| i)
            .collect()
    })
}

/// `recipient_and_params[i].{suffix}` for each index, comma-separated.
pub fn paths(indices: &[usize], suffix: &str) -> String {
    indices
        .iter()
        .map(|i| format!("recipient_and_params[{i}].{suffix}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The indices of the recipients that set `field` (present and not null).
pub fn recipients_with(body: &Value, field: &str) -> Vec<usize> {
    recipients(body).map_or_else(Vec::new, |list| {
        list.iter()
            .enumerate()
            .filter(|(_, r)| fields::present(r, field))
            .map(|(i, _)| i)
            .collect()
    })
}

/// `batch.recipients.range`: 1–1000 recipients (checked before any contact lookup).
pub fn recipients_range(body: Option<&Value>) -> Option<String> {
    let n = recipient_count(body);
    (!(1..=MAX_RECIPIENTS).contains(&n)).then(|| {
        format!(
            "recipient_and_params: {n} recipients; a batch takes 1 to {MAX_RECIPIENTS}: split the recipients into batches of at most {MAX_RECIPIENTS}"
        )
    })
}

/// An RFC 3339 timestamp (`2026-12-07T18:00:00Z`, `…+02:00`, fractions allowed).
pub fn rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (base, offset_secs) = if let Some(base) = text.strip_suffix(['Z', 'z']) {
        (base, 0i64)
    } else {
        let split = text.len().checked_sub(6)?;
        let (base, offset) = (text.get(..split)?, text.get(split..)?);
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return None,
        };
        let (h, m) = offset.get(1..)?.split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        (base, sign * (h * 3600 + m * 60))
    };
    if base.len() < 19 || !matches!(base.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let utc = humantime::parse_rfc3339(&format!("{}T{}Z", &base[..10], &base[11..])).ok()?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    if offset_secs >= 0 {
        utc.checked_sub(shift)
    } else {
        utc.checked_add(shift)
    }
}

/// `batch.send_after.range`: not RFC 3339, or more than 7 days after `now`.
pub fn send_after_range(body: Option<&Value>, now: SystemTime) -> Option<String> {
    let value = body
        .and_then(|b| fields::get(b, "send_after"))
        .filter(|v| !v.is_null())?;
    let Some(text) = value.as_str().filter(|s| !s.is_empty()) else {
        return value.as_str().is_none().then(|| {
            "send_after: not a string; send an RFC 3339 timestamp such as 2026-01-31T09:00:00Z"
                .into()
        });
    };
    match rfc3339(text) {
        None => Some(format!(
            "send_after: {text:?} is not an RFC 3339 timestamp; send one such as 2026-01-31T09:00:00Z"
        )),
        Some(at) if at > now + MAX_SEND_AFTER => Some(format!(
            "send_after: {text} is more than 7 days ahead; the Batch API schedules at most 7 days ahead: send it later or choose an earlier time"
        )),
        Some(_) => None,
    }
}

/// Whether a metadata map (an object) holds the reserved key.
fn holds_reserved(map: Option<&Value>) -> bool {
    map.and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(RESERVED_KEY))
}

/// `batch.reserved_metadata`: every place `_batch_id` is set (top level or per recipient, in
/// `message_metadata` or `conversation_metadata`), which the API silently overwrites; the
/// rewrite drops it (`Edit::DropReservedMetadata`, applied by [`drop_reserved`]).
pub fn reserved_metadata(body: Option<&Value>) -> Option<String> {
    let body = body?;
    let mut found = Vec::new();
    for field in ["message_metadata", "conversation_metadata"] {
        if holds_reserved(fields::get(body, field)) {
            found.push(format!("{field}.{RESERVED_KEY}"));
        }
    }
    for (i, r) in recipients(body).into_iter().flatten().enumerate() {
        for field in ["message_metadata", "conversation_metadata"] {
            if holds_reserved(fields::get(r, field)) {
                found.push(format!("recipient_and_params[{i}].{field}.{RESERVED_KEY}"));
            }
        }
    }
    (!found.is_empty()).then(|| {
        format!(
            "{}: {RESERVED_KEY} is reserved by the Batch API, which replaces it with the batch id; use another key",
            found.join(", ")
        )
    })
}

/// Removes `_batch_id` from both metadata maps, at the top level and in every recipient.
pub fn drop_reserved(body: &mut Value) {
    let strip = |node: &mut Value| {
        for field in ["message_metadata", "conversation_metadata"] {
            if let Some(map) = fields::get_mut(node, field).and_then(Value::as_object_mut) {
                map.shift_remove(RESERVED_KEY);
            }
        }
    };
    strip(body);
    if let Some(list) = fields::get_mut(body, "recipient_and_params").and_then(Value::as_array_mut)
    {
        list.iter_mut().for_each(strip);
    }
}

/// Removes `field` from every recipient.
pub fn remove_in_recipients(body: &mut Value, field: &str) {
    if let Some(list) = fields::get_mut(body, "recipient_and_params").and_then(Value::as_array_mut)
    {
        for r in list.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(key) = fields::key_of(r, field).cloned() {
                r.shift_remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc3339_takes_offsets_and_fractions() {
        assert_eq!(rfc3339("1970-01-01T00:01:00Z"), Some(at(60)));
        assert_eq!(rfc3339("1970-01-01T01:01:00+01:00"), Some(at(60)));
        assert_eq!(rfc3339("1970-01-01T00:00:00-00:30"), Some(at(1800)));
        assert!(rfc3339("1970-01-01T00:01:00.250Z").is_some());
        for bad in [
            "",
            "tomorrow",
            "1970-01-01",
            "1970-01-01 00:00:00",
            "1970-01-01T00:00:00+2",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn send_after_is_bounded_by_seven_days() {
        let now = at(1_800_000_000);
        let body = |s: Value| json!({ "send_after": s });
        let in_days =
            |d: u64| humantime::format_rfc3339(now + Duration::from_secs(d * 86_400)).to_string();
        assert_eq!(send_after_range(Some(&body(json!(in_days(7)))), now), None);
        assert_eq!(send_after_range(Some(&json!({})), now), None);
        assert!(send_after_range(Some(&body(json!(in_days(8)))), now)
            .is_some_and(|m| m.contains("7 days")));
        assert!(send_after_range(Some(&body(json!("soon"))), now)
            .is_some_and(|m| m.contains("RFC 3339")));
        assert!(send_after_range(Some(&body(json!(5))), now).is_some());
    }

    #[test]
    fn recipients_are_counted_and_named_by_index() {
        let list: Vec<Value> = (0..4)
            .map(|i| {
                if i % 2 == 1 {
                    json!({"recipient": {"contact_id": "c"}})
                } else {
                    json!({"recipient": {"identified_by": {}}})
                }
            })
            .collect();
        let body = json!({ "recipient_and_params": list });
        assert_eq!(recipients_range(Some(&body)), None);
        assert!(recipients_range(Some(&json!({"recipient_and_params": []}))).is_some());
        assert!(recipients_range(Some(&json!({}))).is_some());
        let many = json!({ "recipient_and_params": vec![json!({}); MAX_RECIPIENTS + 1] });
        assert!(recipients_range(Some(&many)).is_some_and(|m| m.contains("1001 recipients")));
        assert_eq!(contact_recipients(&body), [1, 3]);
        assert_eq!(
            paths(&[1, 3], "recipient.contact_id"),
            "recipient_and_params[1].recipient.contact_id, recipient_and_params[3].recipient.contact_id"
        );
    }

    #[test]
    fn reserved_metadata_is_found_everywhere_and_dropped() {
        let mut body = json!({
            "message_metadata": {"_batch_id": "x", "keep": 1},
            "recipient_and_params": [{}, {"conversation_metadata": {"_batch_id": "y"}}],
        });
        let message = reserved_metadata(Some(&body)).expect("found");
        assert!(message.starts_with("message_metadata._batch_id, recipient_and_params[1].conversation_metadata._batch_id:"), "{message}");
        drop_reserved(&mut body);
        assert_eq!(body["message_metadata"], json!({"keep": 1}));
        assert_eq!(
            body["recipient_and_params"][1]["conversation_metadata"],
            json!({})
        );
        assert!(reserved_metadata(Some(&body)).is_none());
    }
}
