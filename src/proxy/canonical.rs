//! The canonical request target: what the gateway classifies is what the upstream receives.
//!
//! The upstream (an HTTP → gRPC front end) decodes percent-encoding, and lenient front ends
//! also resolve dot segments and merge slashes. So before classification the path is put in
//! one form, and that form is what is forwarded:
//!
//! 1. percent-encoded characters that are allowed literally in a path segment are decoded
//!    (unreserved characters, RFC 3986 §6.2.2.2, and the sub-delimiters, `:` and `@`);
//! 2. dot segments are removed (RFC 3986 §5.2.4) and empty segments (`//`, a trailing `/`)
//!    dropped.
//!
//! What has no single meaning is refused: an encoded `/` or `\`, a NUL or other control
//! character, malformed percent-encoding, and — under `/v1/projects/`, where every segment is a
//! literal or an id — anything left that is not a plain id character, or a `:` verb outside the
//! last segment. [`CanonicalLayer`] applies this to every request before it is classified.

use std::borrow::Cow;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Uri};
use tower::{Layer, Service};

use super::classify::path_segments;

/// The API's path prefix: below it every segment is a literal or an id.
pub const API_PREFIX: &str = "/v1/projects/";

/// Why a request target has no canonical form (a client-facing message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonCanonical(pub String);

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Characters a path segment may carry literally, so decoding them changes no meaning.
fn literal_in_segment(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Characters an API path segment may hold once decoded: ids and literals are letters, digits,
/// `-`, `_`, `.`, `~`; `:` separates a verb; `+` and `@` appear in identities (phone numbers,
/// addresses) in consent paths.
fn api_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'+' | b'@')
}

/// Decodes what can be decoded in one segment.
fn decode_segment(segment: &str) -> Result<Cow<'_, str>, NonCanonical> {
    let bytes = segment.as_bytes();
    if !bytes.contains(&b'%') && !bytes.contains(&b'\\') {
        return Ok(Cow::Borrowed(segment));
    }
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(NonCanonical(
                "path: a backslash has no single meaning in a path; send / to separate segments"
                    .into(),
            )),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(NonCanonical(
                        "path: malformed percent-encoding; encode a literal % as %25".into(),
                    ));
                };
                let b = hi << 4 | lo;
                match b {
                    b'/' | b'\\' => {
                        return Err(NonCanonical(
                            "path: an encoded / or \\ (%2F, %5C) has no single meaning; send ids without slashes and separate segments with a plain /".into(),
                        ))
                    }
                    0..=0x1F | 0x7F => {
                        return Err(NonCanonical(
                            "path: a control character (NUL, CR, LF, …) is not allowed in a path".into(),
                        ))
                    }
                    b'%' => {
                        return Err(NonCanonical(
                            "path: an encoded % (%25) is decoded once by some front ends and twice by others; send ids without %".into(),
                        ))
                    }
                    b if literal_in_segment(b) => out.push(char::from(b)),
                    // Kept encoded, in one spelling (upper-case hex).
                    b => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0xF)]));
                    }
                }
                i += 3;
            }
            b => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    if !valid_utf8_when_decoded(segment) {
        return Err(NonCanonical(
            "path: percent-encoded bytes that are not valid UTF-8 (overlong or broken sequences) have no single meaning; encode characters as UTF-8".into(),
        ));
    }
    Ok(Cow::Owned(out))
}

/// Whether the segment, fully percent-decoded, is valid UTF-8 (overlong forms are not).
fn valid_utf8_when_decoded(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if !bytes
        .windows(2)
        .any(|w| w[0] == b'%' && hex(w[1]).is_some_and(|h| h >= 8))
    {
        return true;
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// The canonical form of `path` (borrowed when it already is canonical).
pub fn canonical_path(path: &str) -> Result<Cow<'_, str>, NonCanonical> {
    if path.bytes().any(|b| b < 0x20 || b == 0x7F) {
        return Err(NonCanonical(
            "path: a control character is not allowed in a path".into(),
        ));
    }
    let needs_work = !path.starts_with('/')
        || path.contains(['%', '\\'])
        || path.contains("//")
        || (path.len() > 1 && path.ends_with('/'))
        || path_segments(path).any(|s| s == "." || s == "..");
    let canonical = if needs_work {
        let mut segments: Vec<Cow<'_, str>> = Vec::new();
        for raw in path_segments(path) {
            // Decoding first, so an encoded dot segment is removed like a plain one.
            let segment = decode_segment(raw)?;
            match segment.as_ref() {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                _ => segments.push(segment),
            }
        }
        let mut out = String::with_capacity(path.len());
        for s in &segments {
            out.push('/');
            out.push_str(s);
        }
        if out.is_empty() {
            out.push('/');
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(path)
    };
    if let Some(rest) = canonical.strip_prefix(API_PREFIX) {
        check_api_segments(rest)?;
    }
    Ok(canonical)
}

/// Below `/v1/projects/`, every segment is an id or a literal: plain id characters only, and a
/// `:` verb only in the last segment.
fn check_api_segments(rest: &str) -> Result<(), NonCanonical> {
    let mut segments = path_segments(rest).peekable();
    while let Some(segment) = segments.next() {
        if let Some(bad) = segment.bytes().find(|b| !api_segment_char(*b)) {
            let shown = if bad == b'%' {
                "a percent-encoded character".to_string()
            } else {
                format!("{:?}", char::from(bad))
            };
            return Err(NonCanonical(format!(
                "path: {shown} is not valid in a Conversation API id or path segment; ids are letters, digits, -, _ and ."
            )));
        }
        let colons = segment.bytes().filter(|b| *b == b':').count();
        let last = segments.peek().is_none();
        if colons > 1 || (colons == 1 && !last) {
            return Err(NonCanonical(
                "path: a : verb (such as :send) belongs only at the end of the last segment, once"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Layer for [`Canonical`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CanonicalLayer;

impl<S> Layer<S> for CanonicalLayer {
    type Service = Canonical<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Canonical { inner }
    }
}

/// Puts every request's path in canonical form before it is classified; a path with none keeps
/// its target and carries a [`NonCanonical`] extension for the handler to refuse (or, in
/// shadow, to record and forward unchanged).
#[derive(Clone, Debug)]
pub struct Canonical<S> {
    inner: S,
}

/// The request target with its path replaced by `path` (the query kept byte for byte).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

impl<S, B> Service<Request<B>> for Canonical<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match canonical_path(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(path)) => match with_path(req.uri(), &path) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    req.extensions_mut().insert(NonCanonical(
                        "path: the request target has no canonical form".into(),
                    ));
                }
            },
            Err(refusal) => {
                req.extensions_mut().insert(refusal);
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        canonical_path(path)
            .unwrap_or_else(|e| panic!("{path}: {e:?}"))
            .into_owned()
    }

    fn refused(path: &str) -> String {
        canonical_path(path).expect_err(path).0
    }

    #[test]
    fn canonical_paths_are_left_alone_without_allocating() {
        for p in [
            "/",
            "/v1/projects/p/messages:send",
            "/v1/projects/p/apps/01HX",
            "/oauth2/token",
        ] {
            assert!(matches!(canonical_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn unreserved_and_segment_characters_are_decoded() {
        assert_eq!(
            ok("/v1/projects/%70/messages:send"),
            "/v1/projects/p/messages:send"
        );
        assert_eq!(
            ok("/v1/projects/p/m%65ssages%3Asend"),
            "/v1/projects/p/messages:send"
        );
        assert_eq!(
            ok("/v1/projects/p/messages%3asend"),
            "/v1/projects/p/messages:send"
        );
        assert_eq!(ok("/v1/projects/p/apps/%41pp1"), "/v1/projects/p/apps/App1");
        assert_eq!(ok("/other/%7Euser"), "/other/~user");
    }

    #[test]
    fn dot_and_empty_segments_are_removed() {
        assert_eq!(ok("/v1/projects/p/messages/"), "/v1/projects/p/messages");
        assert_eq!(ok("/v1//projects/p//messages"), "/v1/projects/p/messages");
        assert_eq!(
            ok("/v1/projects/p/x/../messages"),
            "/v1/projects/p/messages"
        );
        assert_eq!(ok("/v1/projects/p/./messages"), "/v1/projects/p/messages");
        assert_eq!(
            ok("/v1/projects/p/x/%2e%2E/messages"),
            "/v1/projects/p/messages"
        );
        assert_eq!(ok("/../../v1/projects/p/apps"), "/v1/projects/p/apps");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn what_has_no_single_meaning_is_refused() {
        assert!(refused("/v1/projects/p/apps/a%2Fb").contains("%2F"));
        assert!(refused("/v1/projects/p/apps/a%5cb").contains("%5C"));
        assert!(refused("/v1/projects/p/apps/a%00").contains("control"));
        assert!(refused("/v1/projects/p/apps/a%0d%0a").contains("control"));
        assert!(refused("/v1/projects/p/apps/a%zz").contains("malformed"));
        assert!(refused("/v1/projects/p/apps/a%2").contains("malformed"));
        assert!(refused("/v1/projects/p/apps/a%20b").contains("not valid"));
        assert!(refused("/v1/projects/p/apps/%C3%A9").contains("not valid"));
        assert!(refused("/v1/projects/p/messages;x:send").contains("not valid"));
        assert!(refused("/v1/projects/p:x/messages").contains("verb"));
        assert!(refused("/v1/projects/p/messages:send:x").contains("verb"));
    }

    #[test]
    fn outside_the_api_prefix_other_encodings_are_kept_in_one_spelling() {
        assert_eq!(ok("/elsewhere/a%2cb%20c"), "/elsewhere/a,b%20c");
        assert_eq!(ok("/elsewhere/%c3%a9"), "/elsewhere/%C3%A9");
    }

    #[test]
    fn encoded_percent_and_bad_utf8_are_refused_anywhere() {
        assert!(refused("/elsewhere/a%25b").contains("%25"));
        assert!(refused("/v1/projects/p/apps/a%2541").contains("%25"));
        assert!(refused("/elsewhere/%C0%AF").contains("UTF-8"), "overlong /");
        assert!(
            refused("/elsewhere/%E0%80%AE").contains("UTF-8"),
            "overlong ."
        );
        assert!(refused("/elsewhere/%C3").contains("UTF-8"));
        assert!(refused("/elsewhere/%FF").contains("UTF-8"));
    }

    #[test]
    fn the_layer_keeps_the_query_byte_for_byte() {
        let uri: Uri = "/v1/projects/%70/messages/?channel_identity=%2B1555&app_id=a"
            .parse()
            .expect("uri");
        let path = ok(uri.path());
        assert_eq!(
            with_path(&uri, &path).expect("uri").to_string(),
            "/v1/projects/p/messages?channel_identity=%2B1555&app_id=a"
        );
    }
}
