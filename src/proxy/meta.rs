//! `RequestMeta`: what the outer layers learn of a request (its connection, id, class and
//! trace id), for the layers below. One request extension instead of one per layer: each
//! extension is a boxed entry in the request's map, allocated and hashed on every request.

use std::sync::Arc;

use http::{HeaderValue, Request};

use super::classify::Classification;
use super::connection::Connection;

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

    /// The API of the listener the request came in on (the Conversation API for requests that
    /// did not come through the connection layer).
    pub fn api_of(extensions: &http::Extensions) -> crate::schema::Api {
        RequestMeta::connection_of(extensions)
            .map_or(crate::schema::Api::Conversation, |(c, _)| c.api)
    }

    /// The client connection and the request's number on it, if the request came through
    /// the connection layer.
    pub fn connection_of(extensions: &http::Extensions) -> Option<&(Arc<Connection>, u64)> {
        extensions.get::<RequestMeta>()?.connection.as_ref()
    }
}
