//! Reading one TOML table into a raw serde struct with every problem named by its full key
//! path: a key that fails (unknown, or of the wrong type) is recorded, dropped, and the rest
//! read again, so one bad key hides no other. serde's messages are rephrased for people
//! (`expected a non-negative integer, found the string "fast"`).

use serde::de::DeserializeOwned;

use super::Problems;

/// Deserialises one table, recording every problem under its full key path (`prefix.key`):
/// a key that fails (unknown, or of the wrong type) is recorded, dropped, and the rest tried
/// again, so one bad key hides no other. `None` when the table cannot be used at all (a
/// required key is missing).
pub(super) fn typed<T: DeserializeOwned>(
    prefix: &str,
    mut table: toml::Table,
    problems: &mut Problems,
) -> Option<T> {
    // Each round removes one key, so this ends.
    for _ in 0..=table.len() + 1 {
        let error =
            match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
        let mut path: Vec<String> = error
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                _ => None,
            })
            .collect();
        let message = error.into_inner().message().trim().to_string();
        if let Some((field, expected)) = unknown_field(&message) {
            if path.last() != Some(&field) {
                path.push(field);
            }
            problems.add(
                key_path(prefix, &path),
                format!("unknown key (expected {expected})"),
            );
        } else if let Some(field) = missing_field(&message) {
            path.push(field);
            problems.add(key_path(prefix, &path), "required");
            return None;
        } else {
            problems.add(key_path(prefix, &path), friendly(&message));
        }
        if !remove_at(&mut table, &path) {
            return None;
        }
    }
    None
}

/// `prefix.a.b`, quoting keys that are not bare TOML keys (`policy.rules."x.y"`).
fn key_path(prefix: &str, path: &[String]) -> String {
    let mut out = prefix.to_string();
    for key in path {
        if key.starts_with('[') {
            out.push_str(key);
            continue;
        }
        let bare = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !out.is_empty() {
            out.push('.');
        }
        if bare {
            out.push_str(key);
        } else {
            out.push_str(&format!("{key:?}"));
        }
    }
    out
}

/// Removes the value at `path` (map keys and `[i]` indices); false when there is none.
fn remove_at(table: &mut toml::Table, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node: &mut toml::Table = table;
    let mut i = 0;
    while i < parents.len() {
        let key = &parents[i];
        let next = match node.get_mut(key) {
            Some(toml::Value::Table(t)) => t,
            Some(toml::Value::Array(items)) => {
                // `[i]` follows an array key.
                let Some(index) = parents.get(i + 1).or(Some(last)).and_then(|s| {
                    s.strip_prefix('[')?
                        .strip_suffix(']')?
                        .parse::<usize>()
                        .ok()
                }) else {
                    return false;
                };
                if i + 1 == parents.len() {
                    if index < items.len() {
                        items.remove(index);
                        return true;
                    }
                    return false;
                }
                match items.get_mut(index) {
                    Some(toml::Value::Table(t)) => {
                        i += 1;
                        t
                    }
                    _ => return false,
                }
            }
            _ => return false,
        };
        node = next;
        i += 1;
    }
    node.remove(last).is_some()
}

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, `a, b`).
fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .trim_start_matches(", expected one of ")
        .trim_start_matches(", expected ")
        .replace('`', "");
    Some((field.to_string(), expected))
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// serde's `invalid type: string "fast", expected u64` as `expected an integer, found the
/// string "fast"`.
fn friendly(message: &str) -> String {
    let kind = |expected: &str| -> String {
        let e = expected.trim();
        match e {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".into(),
            "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
            "a string" | "string" => "a string".into(),
            "a boolean" | "bool" => "a boolean (true or false)".into(),
            "a sequence" => "an array".into(),
            "a map" => "a table".into(),
            e if e.starts_with("struct ") => "a table".into(),
            e => e.into(),
        }
    };
    let found = |found: &str| -> String {
        let f = found.trim();
        if let Some(s) = f.strip_prefix("string ") {
            return format!("the string {s}");
        }
        for (prefix, word) in [
            ("integer ", "the integer"),
            ("boolean ", "the boolean"),
            ("floating point ", "the number"),
        ] {
            if let Some(v) = f.strip_prefix(prefix) {
                return format!("{word} {}", v.trim_matches('`'));
            }
        }
        match f {
            "sequence" => "an array".into(),
            "map" => "a table".into(),
            f => f.into(),
        }
    };
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some((got, expected)) = message
            .strip_prefix(lead)
            .and_then(|r| r.split_once(", expected "))
        {
            return format!("expected {}, found {}", kind(expected), found(got));
        }
    }
    message.to_string()
}
