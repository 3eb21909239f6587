//! The simulator's Batch API origin (`https://{region}.conversationbatch.api.sinch.com`):
//! the same projects, apps, contacts, message stores and tokens as the Conversation origin,
//! served on its own port (`simulate --batch-listen`; embedded: an ephemeral port) or, in
//! process, for requests to [`IN_PROCESS_BATCH_HOST`].

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use super::{json_response, lenient, Simulator, MAX_BODY};
use crate::api_error::ApiError;
use crate::domain::Operation;

/// The host in-process callers address the Batch origin by (the gateway built without
/// listeners over an embedded simulator).
pub const IN_PROCESS_BATCH_HOST: &str = "batch.simulator.embedded";

/// The Batch API operation of `method` on the path after `/v1/projects/{project}/`, and its
/// batch id.
fn route<'a>(method: &Method, rest: &'a [String]) -> Option<(Operation, Option<&'a str>)> {
    let parts: Vec<&str> = rest.iter().map(String::as_str).collect();
    Some(match (parts.as_slice(), method.as_str()) {
        (["messages"], "POST") => (Operation::BatchSend, None),
        (["messages"], "DELETE") => (Operation::BatchCancel, None),
        (["messages"], "GET") => (Operation::BatchList, None),
        (["messages", id], "GET") => (Operation::BatchGet, Some(*id)),
        (["contacts"], "POST") => (Operation::BatchContactsCreate, None),
        (["contacts"], "DELETE") => (Operation::BatchContactsDelete, None),
        (["consents"], "POST") => (Operation::BatchConsents, None),
        _ => return None,
    })
}

impl Simulator {
    /// Answers one request to the Batch origin.
    pub async fn handle_batch<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let segments = lenient::segments(parts.uri.path());
        let routed = match segments.as_slice() {
            [v1, projects, project, rest @ ..] if v1 == "v1" && projects == "projects" => {
                route(&parts.method, rest).map(|(op, id)| (project.clone(), op, id))
            }
            _ => None,
        };
        let op = routed.as_ref().map_or(Operation::Other, |r| r.1);
        self.calls[op.index()].fetch_add(1, Ordering::Relaxed);
        let Some((project_id, op, id)) = routed else {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no Batch API endpoint {} {}",
                    parts.method,
                    parts.uri.path()
                ),
            )
            .into_response();
        };
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    .into_response()
            }
        };
        let body = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => lenient::body(v),
                Err(e) => {
                    return ApiError::invalid_argument(format!(
                        "body: invalid JSON at line {} column {}",
                        e.line(),
                        e.column()
                    ))
                    .into_response()
                }
            }
        };
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let headers = lenient::last_authorization(&parts.headers);
        let mut state = self.state();
        if let Err(failure) = state.authority.verify(&headers, Some(&project_id)) {
            let mut r = failure.error.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, failure.challenge);
            return r;
        }
        let project = state.projects.entry(project_id).or_default();
        match super::api::batch::handle(project, op, id, &query, &body, SystemTime::now()) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => e.into_response(),
        }
    }

    /// The Batch origin's service for [`crate::server::serve`].
    pub fn batch_service(
        self: std::sync::Arc<Self>,
    ) -> impl tower::Service<
        Request<hyper::body::Incoming>,
        Response = Response<Full<Bytes>>,
        Error = std::convert::Infallible,
        Future = impl std::future::Future<
            Output = Result<Response<Full<Bytes>>, std::convert::Infallible>,
        > + Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let sim = self.clone();
            async move { Ok(sim.handle_batch(req).await) }
        })
    }
}
