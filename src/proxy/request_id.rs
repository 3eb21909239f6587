//! `RequestIdLayer`: keeps the caller's `x-request-id` (when it is a sane token) or makes one,
//! and records it in the request's `RequestMeta` for the layers and logs below.

use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use tower::{Layer, Service};

use super::headers::X_REQUEST_ID;
use super::meta::RequestMeta;
use crate::ids;

/// Longest caller-supplied request id that is kept.
const MAX_LEN: usize = 128;

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

/// Layer for [`SetRequestId`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// Ensures every request has an acceptable `x-request-id`.
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for SetRequestId<S>
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
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if acceptable(v) => v.clone(),
            _ => {
                let v = ids::request_id();
                req.headers_mut().insert(X_REQUEST_ID, v.clone());
                v
            }
        };
        RequestMeta::of(&mut req).request_id = Some(id);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(acceptable(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("has space")));
        let long = "a".repeat(MAX_LEN + 1);
        assert!(!acceptable(&HeaderValue::try_from(long).expect("value")));
    }
}
