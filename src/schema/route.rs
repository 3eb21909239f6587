//! The path router, built from the schema's path templates.
//!
//! A canonical path (see `proxy::canonical`) is matched segment by segment against the
//! templates of the listener's API: literals exactly, `{var}` against one valid id, `{var=**}`
//! against the rest. What a front end could read as another operation is refused rather than
//! guessed at, whatever `policy.unrecognized_route` says:
//!
//! - literals that match only when case is ignored (`/V1/PROJECTS/p/MESSAGES:SEND`);
//! - an id equal to a literal or verb of the API (`…/conversations/recent` is "get conversation
//!   `recent`" to one reader and `conversations:recent` to another);
//! - a `:verb` the resource does not define (`…/apps:ID`, an id written as a verb);
//! - a verb written as a segment (`…/conversations/C1/inject-message`).

use http::Method;

use super::{Api, OperationDef, Segment};
use crate::domain::valid_id;

/// Splits a template into its segments and verb.
pub(super) fn parse_template(path: &str) -> Result<(Vec<Segment>, Option<String>), String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| "a template starts with /".to_string())?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    let last = parts.pop().ok_or_else(|| "empty template".to_string())?;
    let (last, verb) = match last.split_once(':') {
        Some((l, v)) => (l, Some(v.to_string())),
        None => (last, None),
    };
    parts.push(last);
    let mut segments = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let seg = if let Some(inner) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            match inner.strip_suffix("=**") {
                Some(name) if i + 1 == parts.len() => Segment::Rest(name.to_string()),
                Some(_) => return Err("{name=**} only at the end".into()),
                None => Segment::Var(inner.to_string()),
            }
        } else if p.is_empty() {
            return Err("empty segment".into());
        } else {
            Segment::Literal((*p).to_string())
        };
        segments.push(seg);
    }
    Ok((segments, verb))
}

/// Why a path that resembles an operation is refused (rule `request.canonical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRefusal {
    /// Literals matched only with case ignored.
    CaseVariant,
    /// An id equal to a literal or verb of the API.
    ReservedId,
    /// A `:verb` the resource does not define.
    UndefinedVerb,
    /// A verb written as a path segment.
    VerbAsSegment,
}

impl RouteRefusal {
    /// The client-facing message.
    pub const fn message(self) -> &'static str {
        match self {
            RouteRefusal::CaseVariant => "path: the API's path literals are lower-case as documented (e.g. /v1/projects/{project_id}/messages:send); a front end that ignores case would read this path as that operation, so send it exactly as documented",
            RouteRefusal::ReservedId => "path: an id here equals a fixed segment or verb of the API (such as recent or webhooks), which front ends route differently; write verbs after a colon (conversations:recent) and send real ids",
            RouteRefusal::UndefinedVerb => "path: this resource defines no such :verb; ids belong in their own segment (/apps/{app_id}, not /apps:{app_id}) and verbs are the documented ones",
            RouteRefusal::VerbAsSegment => "path: a verb is written after a colon on the resource it acts on (…/conversations/{id}:inject-message), not as a path segment",
        }
    }
}

/// What a path and method route to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// An operation: the definition's index, and the path segments (indexes into the path's
    /// segments) of the project id and of the first id after it.
    Operation {
        /// Index into `Schema::operations`.
        def: usize,
        /// Segment index of `{project_id}`.
        project: usize,
        /// Segment index of the resource id, if the template has one.
        resource: Option<usize>,
    },
    /// A known path, but not with this method.
    WrongMethod,
    /// Resembles an operation in a way front ends read differently.
    Refused(RouteRefusal),
    /// No operation of the API.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    def: usize,
    api: Api,
    method: Method,
    segments: Vec<Segment>,
    verb: Option<String>,
    /// Bit `i` set: segment `i` is a `{var}` (one id).
    vars: u32,
    /// The first `{var}` or `{var=**}` after the project: the resource id's segment.
    resource: Option<usize>,
}

/// The templates, grouped by their collection (the literal after `{project_id}`).
#[derive(Debug)]
pub struct Routes {
    groups: Vec<(String, Vec<Entry>)>,
    /// Every literal and verb of the API after the project: what an id must not be.
    reserved: Vec<(Api, String)>,
}

/// Index of the collection segment: `v1 / projects / {project_id} / collection`.
const COLLECTION: usize = 3;

impl Routes {
    pub(super) fn new(defs: &[OperationDef]) -> Routes {
        let mut groups: Vec<(String, Vec<Entry>)> = Vec::new();
        let mut reserved: Vec<(Api, String)> = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            let collection = match d.segments.get(COLLECTION) {
                Some(Segment::Literal(l)) => l.clone(),
                _ => String::new(),
            };
            let entry = Entry {
                def: i,
                api: d.api,
                method: d.method.clone(),
                segments: d.segments.clone(),
                verb: d.verb.clone(),
                vars: d
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| matches!(s, Segment::Var(_)))
                    .fold(0, |mask, (i, _)| {
                        mask | 1u32.checked_shl(i as u32).unwrap_or(0)
                    }),
                resource: d
                    .segments
                    .iter()
                    .enumerate()
                    .skip(COLLECTION)
                    .find(|(_, s)| matches!(s, Segment::Var(_) | Segment::Rest(_)))
                    .map(|(i, _)| i),
            };
            match groups.iter_mut().find(|(c, _)| *c == collection) {
                Some((_, list)) => list.push(entry),
                None => groups.push((collection, vec![entry])),
            }
            let words = d
                .segments
                .iter()
                .skip(COLLECTION)
                .filter_map(|s| match s {
                    Segment::Literal(l) => Some(l.clone()),
                    _ => None,
                })
                .chain(d.verb.clone());
            for w in words {
                if !reserved.iter().any(|(a, r)| *a == d.api && *r == w) {
                    reserved.push((d.api, w));
                }
            }
        }
        Routes { groups, reserved }
    }

    fn is_reserved(&self, api: Api, word: &str) -> bool {
        self.reserved
            .iter()
            .any(|(a, r)| *a == api && r.eq_ignore_ascii_case(word))
    }

    /// Routes a canonical path (`parts`: its segments without the leading `/`, the last one's
    /// `:verb` split off into `verb`).
    pub fn route(&self, api: Api, method: &Method, parts: &[&str], verb: Option<&str>) -> Routed {
        // One pass over the collection's templates: whether any matches exactly, the first
        // that also takes this method, and every segment some match binds to a `{var}`.
        let mut matched = false;
        let mut vars = 0u32;
        let mut hit: Option<&Entry> = None;
        for e in self.candidates(parts) {
            if e.api != api || !matches(e, parts, verb, false) {
                continue;
            }
            matched = true;
            vars |= e.vars;
            if hit.is_none() && e.method == method {
                hit = Some(e);
            }
        }
        if matched {
            let reserved_id = parts.iter().enumerate().skip(COLLECTION).any(|(i, p)| {
                vars & 1u32.checked_shl(i as u32).unwrap_or(0) != 0 && self.is_reserved(api, p)
            });
            if reserved_id {
                return Routed::Refused(RouteRefusal::ReservedId);
            }
            return match hit {
                Some(entry) => Routed::Operation {
                    def: entry.def,
                    project: 2,
                    resource: entry.resource,
                },
                None => Routed::WrongMethod,
            };
        }
        if self.matches_ignoring_case(api, parts, verb) {
            return Routed::Refused(RouteRefusal::CaseVariant);
        }
        let known_collection = parts.len() > COLLECTION
            && parts[..COLLECTION]
                .iter()
                .zip(["v1", "projects"])
                .all(|(p, l)| p.eq_ignore_ascii_case(l))
            && self.groups.iter().any(|(c, list)| {
                c.eq_ignore_ascii_case(parts[COLLECTION]) && list.iter().any(|e| e.api == api)
            });
        if !known_collection {
            return Routed::Unknown;
        }
        if verb.is_some() {
            return Routed::Refused(RouteRefusal::UndefinedVerb);
        }
        let verbs_as_segments = parts.iter().skip(COLLECTION + 1).any(|p| {
            self.groups.iter().flat_map(|(_, list)| list).any(|e| {
                e.api == api && e.verb.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(p))
            })
        });
        if verbs_as_segments {
            return Routed::Refused(RouteRefusal::VerbAsSegment);
        }
        Routed::Unknown
    }

    /// The methods some definition of `api` takes for this path.
    pub fn methods(&self, api: Api, parts: &[&str], verb: Option<&str>) -> Vec<Method> {
        let mut out: Vec<Method> = Vec::new();
        for e in self.candidates(parts) {
            if e.api == api && matches(e, parts, verb, false) && !out.contains(&e.method) {
                out.push(e.method.clone());
            }
        }
        out
    }

    /// The templates of the path's collection (literals compared without case; the
    /// collection names are distinct that way too).
    fn candidates(&self, parts: &[&str]) -> std::slice::Iter<'_, Entry> {
        let collection = parts.get(COLLECTION).copied().unwrap_or("");
        self.groups
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(collection))
            .map_or([].iter(), |(_, list)| list.iter())
    }

    /// Whether a template of `api` matches with literals and verbs compared without case.
    fn matches_ignoring_case(&self, api: Api, parts: &[&str], verb: Option<&str>) -> bool {
        self.candidates(parts)
            .any(|e| e.api == api && matches(e, parts, verb, true))
    }
}

fn matches(e: &Entry, parts: &[&str], verb: Option<&str>, fold: bool) -> bool {
    let same = |a: &str, b: &str| {
        if fold {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let verb_ok = match (&e.verb, verb) {
        (None, None) => true,
        (Some(want), Some(got)) => same(want, got),
        _ => false,
    };
    if !verb_ok {
        return false;
    }
    let rest = matches!(e.segments.last(), Some(Segment::Rest(_)));
    let fits = if rest {
        parts.len() >= e.segments.len()
    } else {
        parts.len() == e.segments.len()
    };
    fits && e.segments.iter().zip(parts).all(|(s, p)| match s {
        Segment::Literal(l) => same(l, p),
        Segment::Var(_) => valid_id(p),
        Segment::Rest(_) => !p.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::schema;
    use super::*;
    use crate::domain::Operation;

    fn route(method: Method, path: &str) -> Routed {
        let rest = path.strip_prefix('/').expect("abs");
        let mut parts: Vec<&str> = rest.split('/').collect();
        let last = parts.pop().expect("last");
        let (last, verb) = match last.split_once(':') {
            Some((l, v)) => (l, Some(v)),
            None => (last, None),
        };
        parts.push(last);
        schema()
            .routes()
            .route(Api::Conversation, &method, &parts, verb)
    }

    fn op(method: Method, path: &str) -> Option<Operation> {
        match route(method, path) {
            Routed::Operation { def, .. } => Some(schema().operations[def].op),
            _ => None,
        }
    }

    #[test]
    fn templates_route_their_operations() {
        assert_eq!(
            op(Method::POST, "/v1/projects/p/messages:send"),
            Some(Operation::SendMessage)
        );
        assert_eq!(
            op(Method::GET, "/v1/projects/p/apps/A1/consents/lists/x"),
            Some(Operation::ListConsents)
        );
        assert_eq!(
            op(
                Method::POST,
                "/v1/projects/p/conversations/C1:inject-message"
            ),
            Some(Operation::InjectMessage)
        );
        assert_eq!(
            route(Method::PUT, "/v1/projects/p/apps"),
            Routed::WrongMethod
        );
    }

    #[test]
    fn what_front_ends_read_differently_is_refused() {
        use RouteRefusal as R;
        for (path, why) in [
            ("/v1/projects/p/conversations/recent", R::ReservedId),
            ("/v1/projects/p/apps/webhooks", R::ReservedId),
            ("/v1/projects/p/apps/Messages", R::ReservedId),
            ("/V1/PROJECTS/p/MESSAGES:SEND", R::CaseVariant),
            ("/v1/projects/p/Messages:send", R::CaseVariant),
            ("/v1/projects/p/messages:SEND", R::CaseVariant),
            ("/v1/projects/p/apps:A1", R::UndefinedVerb),
            ("/v1/projects/p/messages:unknown", R::UndefinedVerb),
            (
                "/v1/projects/p/conversations/C1/inject-message",
                R::VerbAsSegment,
            ),
        ] {
            assert_eq!(route(Method::GET, path), Routed::Refused(why), "{path}");
        }
        assert_eq!(
            route(Method::GET, "/v1/projects/p/nothing"),
            Routed::Unknown
        );
        assert_eq!(
            route(Method::GET, "/v1/projects/p/nothing:x"),
            Routed::Unknown
        );
    }
}
