//! Value checks shared by the config sections: addresses, URLs, ranges, one-of choices, log
//! filters, each recording what is wrong in the [`Problems`] list.

use std::net::SocketAddr;

use http::Uri;
use serde::de::DeserializeOwned;

use super::typed::typed;
use super::Problems;

/// The levels a log filter names.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `log.level` filter: a level, or comma-separated `target=level` directives. A bare
/// word that is not a level would be read as a target name and silence everything else, so it
/// is refused (`warning` is the usual slip).
pub(super) fn log_filter(filter: &str) -> Result<(), String> {
    let hint = "use one of trace, debug, info, warn, error, off, or directives such as \"info,modegate=debug\"";
    if filter.trim().is_empty() {
        return Err(format!("empty; {hint}"));
    }
    for directive in filter.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{level:?} is not a log level; {hint}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("{filter:?} is not a log filter ({e}); {hint}"))
}

/// Takes one section out of the document and deserialises it (see [`typed`]).
pub(super) fn section<T: DeserializeOwned>(
    doc: &mut toml::Table,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    match doc.remove(name) {
        None => typed(name, toml::Table::new(), problems),
        Some(toml::Value::Table(table)) => typed(name, table, problems),
        Some(_) => {
            problems.add(name, "must be a table");
            None
        }
    }
}

pub(super) fn socket_addr(key: &str, value: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.add(
                key,
                format!(
                    "{value:?} is not a socket address (expected IP:PORT such as 0.0.0.0:8080)"
                ),
            );
            None
        }
    }
}

pub(super) fn http_url(key: &str, value: &str, problems: &mut Problems) -> Option<Uri> {
    let uri = match value.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => {
            problems.add(key, format!("{value:?} is not a URL"));
            return None;
        }
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            problems.add(
                key,
                format!("{value:?} must start with http:// or https://"),
            );
            return None;
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        problems.add(key, format!("{value:?} has no host"));
        return None;
    }
    if uri.query().is_some() {
        problems.add(key, format!("{value:?} must not have a query"));
        return None;
    }
    Some(uri)
}

pub(super) fn range(key: &str, value: u64, lo: u64, hi: u64, problems: &mut Problems) -> u64 {
    if value < lo || value > hi {
        problems.add(key, format!("{value} is out of range ({lo}..={hi})"));
    }
    value.clamp(lo, hi)
}

pub(super) fn one_of<'a>(
    key: &str,
    value: &str,
    allowed: &[&'a str],
    problems: &mut Problems,
) -> &'a str {
    match allowed.iter().find(|a| **a == value) {
        Some(a) => a,
        None => {
            problems.add(
                key,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            );
            allowed[0]
        }
    }
}
