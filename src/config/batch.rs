//! The Batch API listener's settings: where it forwards (`upstream.batch_base_url`, by default
//! the Batch origin of `base_url`'s region) and how it must differ from the other listeners.

use http::Uri;

use super::values::http_url;
use super::Problems;
use super::{ServerSettings, UpstreamSettings, UpstreamTarget};

/// The Batch API origin of a Sinch regional Conversation origin
/// (`https://eu.conversation.api.sinch.com` → `https://eu.conversationbatch.api.sinch.com`).
pub(super) fn batch_origin_of(base: &Uri) -> Option<Uri> {
    let region = base
        .host()?
        .strip_suffix(".conversation.api.sinch.com")
        .filter(|r| ["us", "eu", "br"].contains(r))?;
    format!("https://{region}.conversationbatch.api.sinch.com")
        .parse()
        .ok()
}

/// `upstream.batch_base_url`: the explicit value, else `base_url`'s Batch origin (none for the
/// embedded simulator, whose own Batch origin is known only once it is bound).
pub(super) fn base_url(
    explicit: Option<&str>,
    target: &UpstreamTarget,
    problems: &mut Problems,
) -> Option<Uri> {
    match (explicit, target) {
        (Some(url), _) => http_url("upstream.batch_base_url", url, problems),
        (None, UpstreamTarget::Url(base)) => batch_origin_of(base),
        (None, UpstreamTarget::Embedded { .. }) => None,
    }
}

/// Whether every proxy listener (Conversation and Batch) is bound to loopback.
pub(super) fn loopback_only(s: &ServerSettings) -> bool {
    s.listen.ip().is_loopback() && s.batch_listen.is_none_or(|b| b.ip().is_loopback())
}

/// A batch listener needs an origin, and a port of its own.
pub(super) fn check(s: &ServerSettings, u: &UpstreamSettings, problems: &mut Problems) {
    let Some(batch) = s.batch_listen else {
        return;
    };
    if u.batch_base_url.is_none() && matches!(u.target, UpstreamTarget::Url(_)) {
        problems.add(
            "upstream.batch_base_url",
            "required with server.batch_listen when upstream.base_url is not a Sinch regional origin; set the Batch API origin (e.g. https://us.conversationbatch.api.sinch.com)",
        );
    }
    if (batch == s.listen || batch == s.admin_listen) && batch.port() != 0 {
        problems.add(
            "server.batch_listen",
            "is also server.listen or server.admin_listen; use another port",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_origin_follows_the_region() {
        for region in ["us", "eu", "br"] {
            let base: Uri = format!("https://{region}.conversation.api.sinch.com")
                .parse()
                .expect("uri");
            assert_eq!(
                batch_origin_of(&base).map(|u| u.to_string()),
                Some(format!("https://{region}.conversationbatch.api.sinch.com/"))
            );
        }
        let other: Uri = "http://127.0.0.1:3014".parse().expect("uri");
        assert_eq!(batch_origin_of(&other), None);
        let unknown: Uri = "https://xx.conversation.api.sinch.com"
            .parse()
            .expect("uri");
        assert_eq!(batch_origin_of(&unknown), None);
    }

    #[test]
    fn a_batch_listener_needs_an_origin() {
        let problems = |text: &str| match crate::Config::parse(text, std::path::Path::new("t.toml"))
        {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        let listen = "[server]\nbatch_listen = \"127.0.0.1:8081\"\n";
        assert!(problems(&format!(
            "{listen}[upstream]\nbase_url = \"http://127.0.0.1:9\"\n"
        ))
        .contains("upstream.batch_base_url"));
        assert_eq!(problems(&format!("{listen}[upstream]\nbase_url = \"http://127.0.0.1:9\"\nbatch_base_url = \"http://127.0.0.1:10\"\n")), "");
        assert_eq!(
            problems(listen),
            "",
            "the default base_url has a Batch origin"
        );
        assert!(
            problems("[server]\nbatch_listen = \"0.0.0.0:8080\"\n").contains("server.batch_listen")
        );
    }
}
