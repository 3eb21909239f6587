//! `RequestMeta`: what the outer layers learn of a request (its [`Connection`], id, class and
//! trace id), for the layers below; the request is classified once, here. One request extension instead of one per layer: each
//! extension is a boxed entry in the request's map, allocated and hashed on every request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{HeaderValue, Request};

use super::classify::{classify_for, Classification};
use super::headers;
use crate::schema::Api;
use crate::server::framing::FramingFlag;
use crate::server::{CloseCause, ConnectionInfo};

/// The W3C trace id of a request (from a valid `traceparent`), for the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceId(pub String);

/// The record the layers fill in as a request passes them.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    /// The client connection and the request's number on it (0-based, arrival order).
    pub connection: Option<(Arc<Connection>, u64)>,
    /// The request's id, as sent to the upstream and echoed to the client.
    pub request_id: Option<HeaderValue>,
    /// What the request is, as the observing layer classified it.
    pub class: Option<Classification>,
    /// From a valid `traceparent`.
    pub trace_id: Option<TraceId>,
}

impl RequestMeta {
    /// The request's record, made empty if no layer above made one.
    pub fn of<B>(req: &mut Request<B>) -> &mut RequestMeta {
        req.extensions_mut().get_or_insert_default()
    }

    /// The request's record, if a layer made one.
    pub fn get<B>(req: &Request<B>) -> Option<&RequestMeta> {
        req.extensions().get()
    }

    /// What the request is: classified on the first call (by the API of its listener, its
    /// method and path), then read from the record.
    pub fn classify<B>(req: &mut Request<B>) -> Classification {
        if let Some(class) = RequestMeta::get(req).and_then(|m| m.class) {
            return class;
        }
        let api = RequestMeta::api_of(req.extensions());
        let class = classify_for(api, req.method(), req.uri().path());
        RequestMeta::of(req).class = Some(class);
        class
    }

    /// The API of the listener the request came in on (the Conversation API for requests that
    /// did not come through the connection layer).
    pub fn api_of(extensions: &http::Extensions) -> Api {
        RequestMeta::connection_of(extensions).map_or(Api::Conversation, |(c, _)| c.api)
    }

    /// The client connection and the request's number on it, if the request came through
    /// the connection layer.
    pub fn connection_of(extensions: &http::Extensions) -> Option<&(Arc<Connection>, u64)> {
        extensions.get::<RequestMeta>()?.connection.as_ref()
    }
}

/// A client connection, built once and shared by its requests.
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its `x-forwarded-for` value.
    pub forwarded_for: http::HeaderValue,
    /// Raised when a request on this connection carried both framing headers.
    pub framing: FramingFlag,
    /// Whether the client connected over TLS (forwarded as `x-forwarded-proto: https`).
    pub tls: bool,
    /// The API the listener serves: it classifies the connection's requests and chooses their
    /// origin (never a header).
    pub api: Api,
    /// Where the request path records why it closes the connection (an HTTP/1.1 body that made
    /// no progress).
    pub close: CloseCause,
    /// Requests seen so far (HTTP/1 serves them in order, so this numbers them as the framing
    /// sniffer does).
    requests: AtomicU64,
}

impl Connection {
    /// From the server's connection info.
    pub fn new(info: ConnectionInfo) -> Arc<Connection> {
        Connection::for_api(info, Api::Conversation)
    }

    /// From the server's connection info, on a listener serving `api`.
    pub fn for_api(info: ConnectionInfo, api: Api) -> Arc<Connection> {
        Arc::new(Connection {
            api,
            peer: info.peer,
            forwarded_for: headers::forwarded_for(info.peer.ip()),
            framing: info.framing,
            tls: info.tls,
            close: info.close,
            requests: AtomicU64::new(0),
        })
    }

    /// Numbers the next request on this connection.
    pub(super) fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether request `index` of this connection carried both framing headers.
    pub fn ambiguous_framing(&self, index: u64) -> bool {
        self.framing.raised_for(index)
    }

    /// A connection from `peer` that no socket stands behind (in-process callers, tests).
    pub fn in_process(peer: SocketAddr) -> Arc<Connection> {
        Connection::in_process_for(peer, Api::Conversation)
    }

    /// [`Connection::in_process`] on a listener serving `api`.
    pub fn in_process_for(peer: SocketAddr, api: Api) -> Arc<Connection> {
        Connection::for_api(
            ConnectionInfo {
                peer,
                framing: FramingFlag::default(),
                tls: false,
                close: CloseCause::default(),
            },
            api,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Operation;

    #[test]
    fn a_request_is_classified_once_and_read_from_its_record_after() {
        let mut req = Request::get("/v1/projects/p/apps/a")
            .body(())
            .expect("request");
        let class = RequestMeta::classify(&mut req);
        assert_eq!(class.operation, Operation::GetApp);
        assert_eq!(RequestMeta::get(&req).and_then(|m| m.class), Some(class));
        // A later layer reads the record, not the (here rewritten) path.
        *req.uri_mut() = http::Uri::from_static("/v1/projects/p/messages");
        assert_eq!(RequestMeta::classify(&mut req), class);
    }
}
