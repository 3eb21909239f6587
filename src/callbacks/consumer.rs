//! A small built-in callback consumer, for the demo and tests: it records every callback it
//! receives (path, headers, exact body, and whether the signature verified when it holds the
//! secret) and answers 200 `{}`. `GET /received` lists what it recorded as JSON.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use super::signature::{unix_now, Secrets};

/// Largest callback the consumer reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// One callback as the consumer received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The exact body.
    pub body: Bytes,
    /// Whether the signature verified (`None`: the consumer holds no secret).
    pub verified: Option<bool>,
}

impl Received {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The consumer.
#[derive(Default)]
pub struct Consumer {
    secrets: Option<Secrets>,
    received: Mutex<Vec<Received>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer that verifies signatures with `secrets` when given.
    pub fn new(secrets: Option<Secrets>) -> Arc<Consumer> {
        Arc::new(Consumer {
            secrets,
            received: Mutex::default(),
        })
    }

    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET && parts.uri.path() == "/received" {
            let list: Vec<Value> = self
                .received()
                .iter()
                .map(|r| json!({"path": r.path, "verified": r.verified, "body": r.json()}))
                .collect();
            return json_response(StatusCode::OK, &json!({ "received": list }));
        }
        if parts.method != Method::POST {
            return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({}));
        }
        let Ok(collected) = Limited::new(body, MAX_BODY).collect().await else {
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({}));
        };
        let body = collected.to_bytes();
        let verified = self
            .secrets
            .as_ref()
            .map(|s| s.check(&parts.headers, &body, unix_now(), 300).is_ok());
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Received {
                path: parts.uri.path().to_string(),
                headers: parts.headers,
                body,
                verified,
            });
        json_response(StatusCode::OK, &json!({}))
    }

    /// The service for [`crate::server::serve`].
    pub fn service(
        self: Arc<Self>,
    ) -> impl tower::Service<
        Request<hyper::body::Incoming>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let this = self.clone();
            async move { Ok(this.handle(req).await) }
        })
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_and_verifies_what_it_receives() {
        let secrets = Secrets::parse("s3").expect("secret");
        let c = Consumer::new(Some(secrets.clone()));
        let mut req = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .expect("req");
        for (k, v) in super::super::signature::signed_headers(secrets.signing(), b"{\"a\":1}") {
            req.headers_mut().insert(k, v);
        }
        assert_eq!(c.handle(req).await.status(), StatusCode::OK);
        let bad = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("req");
        c.handle(bad).await;
        let got = c.received();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].verified, got[1].verified),
            (Some(true), Some(false))
        );
        assert_eq!(got[0].json()["a"], 1);
        let list = c
            .handle(
                Request::get("/received")
                    .body(Full::new(Bytes::new()))
                    .expect("req"),
            )
            .await;
        let body = list.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["received"][0]["path"], "/hook");
    }
}
