//! Pure classification of a request into a Conversation API [`Operation`].
//!
//! `classify(method, path)` never allocates and never fails: anything it does not recognise is
//! [`Operation::Other`], which the gateway forwards untouched. Ids in the path are checked with
//! the one id rule of [`crate::domain::valid_id`].

use http::Method;

pub use crate::domain::{valid_id, AppIdLocation, Operation};
use crate::schema::route::{RouteRefusal, Routed};
use crate::schema::{schema, Api, OperationDef};

/// A byte range of the request path (kept instead of a borrow so a classification can travel
/// with the request, in its `RequestMeta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PathSpan {
    start: u32,
    end: u32,
}

impl PathSpan {
    fn of(path: &str, part: &str) -> Self {
        // `part` is always a sub-slice of `path`.
        let start = part.as_ptr() as usize - path.as_ptr() as usize;
        Self {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn get(self, path: &str) -> Option<&str> {
        path.get(self.start as usize..self.end as usize)
    }
}

/// What the classifier learned of one request: its operation and where its ids are in the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The API call.
    pub operation: Operation,
    def: Option<u16>,
    project: Option<PathSpan>,
    resource: Option<PathSpan>,
    /// Why a path that resembles an operation is refused (it is then `other`).
    pub refusal: Option<RouteRefusal>,
}

impl Classification {
    fn other() -> Self {
        Self {
            operation: Operation::Other,
            def: None,
            project: None,
            resource: None,
            refusal: None,
        }
    }

    /// The operation's definition in the schema.
    pub fn definition(&self) -> Option<&'static OperationDef> {
        self.def
            .map(|d| &crate::schema::schema().operations[usize::from(d)])
    }

    /// `{project_id}` of `/v1/projects/{project_id}/…`.
    pub fn project_id<'a>(&self, path: &'a str) -> Option<&'a str> {
        self.project.and_then(|s| s.get(path))
    }

    /// The id named in the path after the collection: the app id of `/apps/{app_id}…`, the
    /// message id of `/messages/{message_id}`, the contact id of `/contacts/{contact_id}`, …
    pub fn resource_id<'a>(&self, path: &'a str) -> Option<&'a str> {
        self.resource.and_then(|s| s.get(path))
    }

    /// The app id when the operation carries it in the path.
    pub fn path_app_id<'a>(&self, path: &'a str) -> Option<&'a str> {
        match self.operation.app_id_location() {
            AppIdLocation::Path => self.resource_id(path),
            _ => None,
        }
    }
}

/// `path` split at `/`, as `str::split` would, by a plain byte scan: paths are short and this
/// runs on every request, where the general string searcher's set-up costs more than the scan.
pub(crate) fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.bytes().position(|b| b == b'/') {
            Some(i) => {
                rest = Some(&current[i + 1..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The most segments a routed path has (the consents sub-resource is the deepest).
const MAX_SEGMENTS: usize = 16;

/// Classifies a request to the Conversation API by method and path.
pub fn classify(method: &Method, path: &str) -> Classification {
    classify_for(Api::Conversation, method, path)
}

/// Classifies a request to `api` by method and canonical path, from the schema's templates
/// (the query is not needed to name the operation).
pub fn classify_for(api: Api, method: &Method, path: &str) -> Classification {
    if path == "/oauth2/token" {
        return Classification {
            operation: if method == Method::POST {
                Operation::OauthToken
            } else {
                Operation::Other
            },
            ..Classification::other()
        };
    }
    let Some(split) = Split::of(path) else {
        return Classification::other();
    };
    let (parts, verb) = (split.parts(), split.verb);
    match schema().routes().route(api, method, parts, verb) {
        Routed::Operation {
            def,
            project,
            resource,
        } => Classification {
            operation: schema().operations[def].op,
            def: Some(def as u16),
            project: Some(PathSpan::of(path, parts[project])),
            resource: resource.map(|i| PathSpan::of(path, parts[i])),
            refusal: None,
        },
        Routed::Refused(why) => Classification {
            refusal: Some(why),
            ..Classification::other()
        },
        Routed::WrongMethod | Routed::Unknown => Classification::other(),
    }
}

/// The methods the API defines for `path` other than `tried`, which the caller has classified
/// already (empty when the path names no other operation).
pub fn allowed_methods(api: Api, path: &str, tried: &Method) -> Vec<Method> {
    let Some(split) = Split::of(path) else {
        return Vec::new();
    };
    schema()
        .routes()
        .methods(api, split.parts(), split.verb)
        .into_iter()
        .filter(|m| m != tried)
        .collect()
}

/// A path split into its segments (without the leading `/`) and the last one's `:verb`, on
/// the stack: `None` for a path without a leading `/` or deeper than any operation.
struct Split<'p> {
    parts: [&'p str; MAX_SEGMENTS],
    n: usize,
    verb: Option<&'p str>,
}

impl<'p> Split<'p> {
    fn of(path: &'p str) -> Option<Split<'p>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = [""; MAX_SEGMENTS];
        let mut n = 0;
        for segment in path_segments(rest) {
            *parts.get_mut(n)? = segment;
            n += 1;
        }
        let verb = match n.checked_sub(1).map(|i| (i, parts[i].split_once(':'))) {
            Some((i, Some((last, verb)))) => {
                parts[i] = last;
                Some(verb)
            }
            _ => None,
        };
        Some(Split { parts, n, verb })
    }

    fn parts(&self) -> &[&'p str] {
        &self.parts[..self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_split_as_str_split_does() {
        for path in [
            "",
            "/",
            "//",
            "a",
            "a/",
            "/a",
            "a/b",
            "a//b/",
            "/v1/projects/p/apps/a:stop",
            "é/ü//ß",
            "a/b/c/d/e/f/g",
        ] {
            assert_eq!(
                path_segments(path).collect::<Vec<_>>(),
                path.split('/').collect::<Vec<_>>(),
                "{path:?}"
            );
        }
    }
    use AppIdLocation as L;
    use Operation as Op;

    const P: &str = "/v1/projects/proj-1";

    /// Every endpoint row of the API reference: method, path suffix, operation, app id location,
    /// and the id the path carries.
    fn table() -> Vec<(Method, String, Op, L, Option<&'static str>)> {
        let g = Method::GET;
        let po = Method::POST;
        let pa = Method::PATCH;
        let d = Method::DELETE;
        let rows: Vec<(Method, &str, Op, L, Option<&'static str>)> = vec![
            (g.clone(), "/apps", Op::ListApps, L::None, None),
            (po.clone(), "/apps", Op::CreateApp, L::None, None),
            (g.clone(), "/apps/APP1", Op::GetApp, L::Path, Some("APP1")),
            (
                pa.clone(),
                "/apps/APP1",
                Op::UpdateApp,
                L::Path,
                Some("APP1"),
            ),
            (
                d.clone(),
                "/apps/APP1",
                Op::DeleteApp,
                L::Path,
                Some("APP1"),
            ),
            (
                g.clone(),
                "/apps/APP1/webhooks",
                Op::ListAppWebhooks,
                L::Path,
                Some("APP1"),
            ),
            (
                g.clone(),
                "/apps/APP1/consents/lists/x",
                Op::ListConsents,
                L::Path,
                Some("APP1"),
            ),
            (po.clone(), "/messages:send", Op::SendMessage, L::Body, None),
            (g.clone(), "/messages", Op::ListMessages, L::Query, None),
            (
                g.clone(),
                "/messages/M1",
                Op::GetMessage,
                L::None,
                Some("M1"),
            ),
            (
                pa.clone(),
                "/messages/M1",
                Op::UpdateMessage,
                L::None,
                Some("M1"),
            ),
            (
                d.clone(),
                "/messages/M1",
                Op::DeleteMessage,
                L::None,
                Some("M1"),
            ),
            (
                po.clone(),
                "/messages:fetch-last-message",
                Op::FetchLastMessage,
                L::Body,
                None,
            ),
            (
                po.clone(),
                "/messages:transcode",
                Op::TranscodeMessage,
                L::Body,
                None,
            ),
            (po.clone(), "/events:send", Op::SendEvent, L::Body, None),
            (g.clone(), "/events", Op::ListEvents, L::None, None),
            (g.clone(), "/events/E1", Op::GetEvent, L::None, Some("E1")),
            (
                d.clone(),
                "/events/E1",
                Op::DeleteEvent,
                L::None,
                Some("E1"),
            ),
            (
                g.clone(),
                "/conversations",
                Op::ListConversations,
                L::Query,
                None,
            ),
            (
                po.clone(),
                "/conversations",
                Op::CreateConversation,
                L::Body,
                None,
            ),
            (
                g.clone(),
                "/conversations:recent",
                Op::RecentConversations,
                L::Query,
                None,
            ),
            (
                g.clone(),
                "/conversations/C1",
                Op::GetConversation,
                L::None,
                Some("C1"),
            ),
            (
                pa.clone(),
                "/conversations/C1",
                Op::UpdateConversation,
                L::None,
                Some("C1"),
            ),
            (
                d.clone(),
                "/conversations/C1",
                Op::DeleteConversation,
                L::None,
                Some("C1"),
            ),
            (
                po.clone(),
                "/conversations/C1:stop",
                Op::StopConversation,
                L::None,
                Some("C1"),
            ),
            (
                po.clone(),
                "/conversations/C1:inject-message",
                Op::InjectMessage,
                L::None,
                Some("C1"),
            ),
            (
                po.clone(),
                "/conversations/C1:inject-event",
                Op::InjectEvent,
                L::None,
                Some("C1"),
            ),
            (g.clone(), "/contacts", Op::ListContacts, L::None, None),
            (po.clone(), "/contacts", Op::CreateContact, L::None, None),
            (
                g.clone(),
                "/contacts/K1",
                Op::GetContact,
                L::None,
                Some("K1"),
            ),
            (
                pa.clone(),
                "/contacts/K1",
                Op::UpdateContact,
                L::None,
                Some("K1"),
            ),
            (
                d.clone(),
                "/contacts/K1",
                Op::DeleteContact,
                L::None,
                Some("K1"),
            ),
            (
                po.clone(),
                "/contacts/K1:merge",
                Op::MergeContact,
                L::None,
                Some("K1"),
            ),
            (
                g.clone(),
                "/contacts:identityConflicts",
                Op::IdentityConflicts,
                L::None,
                None,
            ),
            (
                po.clone(),
                "/contacts:getChannelProfile",
                Op::GetChannelProfile,
                L::Body,
                None,
            ),
            (
                po.clone(),
                "/capability:query",
                Op::QueryCapability,
                L::Body,
                None,
            ),
            (po.clone(), "/webhooks", Op::CreateWebhook, L::Body, None),
            (
                g.clone(),
                "/webhooks/W1",
                Op::GetWebhook,
                L::None,
                Some("W1"),
            ),
            (
                pa.clone(),
                "/webhooks/W1",
                Op::UpdateWebhook,
                L::None,
                Some("W1"),
            ),
            (
                d.clone(),
                "/webhooks/W1",
                Op::DeleteWebhook,
                L::None,
                Some("W1"),
            ),
            (g.clone(), "/settings", Op::Settings, L::None, None),
            (pa, "/settings", Op::Settings, L::None, None),
        ];
        rows.into_iter()
            .map(|(m, p, o, l, id)| (m, format!("{P}{p}"), o, l, id))
            .collect()
    }

    #[test]
    fn every_endpoint_row_is_classified() {
        for (method, path, op, loc, id) in table() {
            let c = classify(&method, &path);
            assert_eq!(c.operation, op, "{method} {path}");
            assert_eq!(op.app_id_location(), loc, "{method} {path}");
            assert_eq!(c.project_id(&path), Some("proj-1"), "{method} {path}");
            assert_eq!(c.resource_id(&path), id, "{method} {path}");
        }
    }

    #[test]
    fn path_app_id_only_for_app_scoped_paths() {
        let path = format!("{P}/apps/APP1");
        assert_eq!(
            classify(&Method::GET, &path).path_app_id(&path),
            Some("APP1")
        );
        let path = format!("{P}/messages/M1");
        assert_eq!(classify(&Method::GET, &path).path_app_id(&path), None);
    }

    #[test]
    fn token_endpoint_is_classified() {
        assert_eq!(
            classify(&Method::POST, "/oauth2/token").operation,
            Op::OauthToken
        );
        assert_eq!(classify(&Method::GET, "/oauth2/token").operation, Op::Other);
    }

    #[test]
    fn unknown_shapes_are_other() {
        for (m, p) in [
            (Method::GET, "/"),
            (Method::GET, "/v1/projects/"),
            (Method::GET, "/v1/projects/p"),
            (Method::GET, "/v2/projects/p/apps"),
            (Method::PUT, "/v1/projects/p/apps"),
            (Method::POST, "/v1/projects/p/messages"),
            (Method::GET, "/v1/projects/p/messages:send"),
            (Method::POST, "/v1/projects/p/messages:unknown"),
            (Method::GET, "/v1/projects/p/messages/M1/extra"),
            (Method::GET, "/v1/projects/p/apps/A/webhooks/x"),
            (Method::POST, "/v1/projects/p/conversations/C1:explode"),
            (Method::GET, "/v1/projects/p/nothing"),
            (Method::GET, "/v1/projects/p/apps/A/b/c/d"),
            (Method::GET, "/v1/projects/p/messages/"),
        ] {
            assert_eq!(classify(&m, p).operation, Op::Other, "{m} {p}");
        }
    }

    #[test]
    fn names_are_unique_and_indexes_dense() {
        let mut names: Vec<_> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Operation::ALL.len());
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
    }
}
