//! The gateway's domain vocabulary, a leaf module every other module may use: the API
//! operations, processing modes, what the gateway did with a request, how upstream calls fail,
//! how a mode was resolved, and the one id validator.
//!
//! Nothing here imports another module of the crate, so infrastructure (proxy, metrics, error
//! mapping, caches) and the pure policy core can share these types without import cycles.

use std::fmt;
use std::str::FromStr;

/// Where an operation names the app whose processing mode drives policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppIdLocation {
    /// The operation names no app; its mode can only come from what the gateway knows of the
    /// project.
    None,
    /// `/apps/{app_id}/…`.
    Path,
    /// The `app_id` query parameter.
    Query,
    /// The `app_id` field of the JSON body.
    Body,
}

macro_rules! operations {
    ($($variant:ident => $name:literal, $app:ident;)*) => {
        /// A Conversation API call, as named in metrics and logs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Operation {
            $(#[doc = concat!("`", $name, "`")] $variant,)*
        }

        impl Operation {
            /// Every operation, in declaration order (`ALL[op.index()] == op`).
            pub const ALL: &'static [Operation] = &[$(Operation::$variant,)*];

            /// The metric label / log name, e.g. `send_message`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Operation::$variant => $name,)* }
            }

            /// Where the request names the app whose mode applies.
            pub const fn app_id_location(self) -> AppIdLocation {
                match self { $(Operation::$variant => AppIdLocation::$app,)* }
            }
        }
    };
}

operations! {
    ListApps => "list_apps", None;
    CreateApp => "create_app", None;
    GetApp => "get_app", Path;
    UpdateApp => "update_app", Path;
    DeleteApp => "delete_app", Path;
    ListAppWebhooks => "list_app_webhooks", Path;
    ListConsents => "list_consents", Path;
    SendMessage => "send_message", Body;
    ListMessages => "list_messages", Query;
    GetMessage => "get_message", None;
    UpdateMessage => "update_message", None;
    DeleteMessage => "delete_message", None;
    FetchLastMessage => "fetch_last_message", Body;
    TranscodeMessage => "transcode_message", Body;
    SendEvent => "send_event", Body;
    ListEvents => "list_events", None;
    GetEvent => "get_event", None;
    DeleteEvent => "delete_event", None;
    ListConversations => "list_conversations", Query;
    CreateConversation => "create_conversation", Body;
    RecentConversations => "recent_conversations", Query;
    GetConversation => "get_conversation", None;
    UpdateConversation => "update_conversation", None;
    DeleteConversation => "delete_conversation", None;
    StopConversation => "stop_conversation", None;
    InjectMessage => "inject_message", None;
    InjectEvent => "inject_event", None;
    ListContacts => "list_contacts", None;
    CreateContact => "create_contact", None;
    GetContact => "get_contact", None;
    UpdateContact => "update_contact", None;
    DeleteContact => "delete_contact", None;
    MergeContact => "merge_contact", None;
    IdentityConflicts => "identity_conflicts", None;
    GetChannelProfile => "get_channel_profile", Body;
    QueryCapability => "query_capability", Body;
    CreateWebhook => "create_webhook", Body;
    GetWebhook => "get_webhook", None;
    UpdateWebhook => "update_webhook", None;
    DeleteWebhook => "delete_webhook", None;
    Settings => "settings", None;
    BatchSend => "batch_send", Body;
    BatchCancel => "batch_cancel", None;
    BatchGet => "batch_get", None;
    BatchList => "batch_list", None;
    BatchContactsCreate => "batch_contacts_create", None;
    BatchContactsDelete => "batch_contacts_delete", None;
    BatchConsents => "batch_consents", Body;
    OauthToken => "oauth_token", None;
    Callback => "callback", None;
    Other => "other", None;
}

impl Operation {
    /// Dense index for per-operation tables (metrics, policy indexes).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the call names one message by id (get, update, delete message): the calls whose
    /// store no SDK can tell.
    pub const fn is_message_by_id(self) -> bool {
        matches!(
            self,
            Operation::GetMessage | Operation::UpdateMessage | Operation::DeleteMessage
        )
    }
}

/// An app's processing mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessingMode {
    /// Contacts and conversations are stored.
    Conversation,
    /// Neither contacts nor conversations are stored.
    Dispatch,
}

impl ProcessingMode {
    /// Both modes.
    pub const ALL: [ProcessingMode; 2] = [ProcessingMode::Conversation, ProcessingMode::Dispatch];

    /// The API spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProcessingMode::Conversation => "CONVERSATION",
            ProcessingMode::Dispatch => "DISPATCH",
        }
    }

    /// The other mode.
    pub const fn other(self) -> ProcessingMode {
        match self {
            ProcessingMode::Conversation => ProcessingMode::Dispatch,
            ProcessingMode::Dispatch => ProcessingMode::Conversation,
        }
    }
}

impl FromStr for ProcessingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CONVERSATION" => Ok(ProcessingMode::Conversation),
            "DISPATCH" => Ok(ProcessingMode::Dispatch),
            other => Err(format!(
                "unknown processing mode {other:?} (expected CONVERSATION or DISPATCH)"
            )),
        }
    }
}

impl fmt::Display for ProcessingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metric / log spelling of an optional mode (`unknown` when not known).
pub fn mode_label(mode: Option<ProcessingMode>) -> &'static str {
    mode.map_or("unknown", ProcessingMode::as_str)
}

/// What the gateway did with a request, as told in `x-modegate-decision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Forwarded as is.
    #[default]
    Forwarded,
    /// Changed, then forwarded.
    Rewritten,
    /// Answered by the gateway with an error; not forwarded.
    Rejected,
    /// Forwarded as is while a rule recorded what it would have done.
    Shadow,
}

impl Disposition {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Disposition::Forwarded => "forwarded",
            Disposition::Rewritten => "rewritten",
            Disposition::Rejected => "rejected",
            Disposition::Shadow => "shadow",
        }
    }
}

/// Upstream failure kinds for `modegate_upstream_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// Could not connect (refused, DNS, the egress proxy refused the tunnel).
    Connect,
    /// The TLS handshake or the upstream's certificate check failed.
    Tls,
    /// No response head within the request timeout.
    Timeout,
    /// The connection broke mid-exchange or the upstream spoke garbage.
    Reset,
    /// The upstream answered 5xx.
    Status5xx,
}

impl UpstreamErrorKind {
    /// Every kind.
    pub const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Status5xx,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Status5xx => "status_5xx",
        }
    }
}

/// Why one of the gateway's own upstream calls (a mode or contact lookup) gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFailure {
    /// The exchange itself failed (counted in `modegate_upstream_errors_total`).
    Upstream(UpstreamErrorKind),
    /// The upstream answered with a status that is neither an answer nor a refusal (429, 400,
    /// …): not an upstream error, but no answer either.
    Status(http::StatusCode),
}

/// Where a cached mode came from (`/apps` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeSource {
    /// An upstream `GET app` made by the gateway.
    Lookup,
    /// An app response that passed through the gateway.
    Learned,
    /// A `[[policy.app]]` pin.
    Static,
    /// Another replica's, through the shared cache.
    Shared,
}

impl ModeSource {
    /// The spelling in `/apps`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModeSource::Lookup => "lookup",
            ModeSource::Learned => "learned",
            ModeSource::Static => "static",
            ModeSource::Shared => "shared",
        }
    }
}

/// Where a shared mode cache (Redis) operation failed, for
/// `modegate_shared_cache_errors_total{op}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedCacheOp {
    /// Reading a mode or a credential.
    Get,
    /// Writing a mode or a credential.
    Set,
    /// Deleting a mode and publishing its invalidation.
    Publish,
    /// Holding the invalidation subscription (connecting, subscribing, a bad message).
    Subscribe,
}

impl SharedCacheOp {
    /// Every op, for the metric's zero series.
    pub const ALL: [SharedCacheOp; 4] = [
        SharedCacheOp::Get,
        SharedCacheOp::Set,
        SharedCacheOp::Publish,
        SharedCacheOp::Subscribe,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SharedCacheOp::Get => "get",
            SharedCacheOp::Set => "set",
            SharedCacheOp::Publish => "publish",
            SharedCacheOp::Subscribe => "subscribe",
        }
    }
}

/// Mode-cache lookup outcome for `modegate_mode_cache_lookups_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheResult {
    /// Served from cache.
    Hit,
    /// Loaded from upstream.
    Miss,
    /// Served a stale entry because the lookup failed.
    Stale,
    /// Nothing to serve.
    Error,
}

impl CacheResult {
    /// Every result.
    pub const ALL: [CacheResult; 4] = [
        CacheResult::Hit,
        CacheResult::Miss,
        CacheResult::Stale,
        CacheResult::Error,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Error => "error",
        }
    }
}

/// How a request's mode was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Known, and how.
    Known(ProcessingMode, CacheResult),
    /// The credential was refused or the app is unknown upstream, or nothing ties the call to
    /// a mode: forward untouched.
    Untouched,
    /// The mode cannot be learned now; `policy.unknown_mode` decides.
    Unavailable,
}

/// One channel identity of a contact (`{channel, identity}`).
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Channel, e.g. `SMS`.
    pub channel: String,
    /// The identity on that channel (a phone number, a PSID, …).
    pub identity: String,
}

impl fmt::Debug for Identity {
    // Identities are phone numbers and the like: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Longest id the gateway accepts in a path or a lookup.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is a Conversation API resource id the gateway may classify, key a cache by and
/// put in a lookup path: ULIDs, UUIDs and the like (ASCII letters, digits, `-`, `_`, `.`), not
/// a dot segment, at most [`MAX_ID_LEN`] bytes. The classifier, the caches and the lookups all
/// use this one rule.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One entry of `GET /apps`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KnownApp {
    /// Project id.
    pub project_id: String,
    /// App id.
    pub app_id: String,
    /// Mode.
    pub mode: ProcessingMode,
    /// `lookup`, `learned` or `static`.
    pub source: &'static str,
    /// Seconds since learned (0 for static).
    pub age_secs: u64,
    /// Whether the entry is still within `ttl_secs`.
    pub fresh: bool,
}

/// The key a project id is known by: a UUID in any letter case is one project (lower-cased);
/// any other id is kept as it is.
pub fn project_key(project: &str) -> std::borrow::Cow<'_, str> {
    let b = project.as_bytes();
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if uuid && b.iter().any(u8::is_ascii_uppercase) {
        std::borrow::Cow::Owned(project.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_project_ids_are_one_project_in_any_case() {
        let lower = "e2df3a34-a71b-4448-9db5-a8d2baad28e4";
        assert_eq!(project_key("E2DF3A34-A71B-4448-9DB5-A8D2BAAD28E4"), lower);
        assert_eq!(project_key(lower), lower);
        assert_eq!(project_key("My-Project"), "My-Project");
    }

    #[test]
    fn operations_index_their_own_table() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
    }

    #[test]
    fn ids_are_validated_by_one_rule() {
        for ok in ["01HXYZ", "e2df3a34-a71b-4448-9db5-a8d2baad28e4", "a_b.c"] {
            assert!(valid_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a%2F",
            "a b",
            "a:b",
            "a+b",
            long.as_str(),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_other_mode_is_the_other_one() {
        for m in ProcessingMode::ALL {
            assert_ne!(m, m.other());
            assert_eq!(m, m.other().other());
        }
    }
}
