//! `RescueLayer`: the one place a [`GatewayError`] becomes a response — in the API's error
//! shape, with the headers the error calls for and an [`Outcome`] for the observe layer. The
//! internal detail is logged here, once; it never reaches the body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use super::ctx::Outcome;
use super::GatewayResponse;
use crate::error::GatewayError;
use crate::upstream::full_body;

/// Layer for [`Rescue`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

/// The answer to a request the gateway could not complete.
pub fn error_response(error: &GatewayError) -> GatewayResponse {
    if error.is_upstream() {
        tracing::warn!(error = %error, "upstream failure");
    } else {
        tracing::info!(error = %error, "request refused by gateway");
    }
    let mut response = error.to_api_error().into_response().map(full_body);
    for (name, value) in error.headers() {
        response.headers_mut().insert(name, value);
    }
    response.extensions_mut().insert(Outcome::failed(error));
    response
}

impl<S, B> Service<Request<B>> for Rescue<S>
where
    S: Service<Request<B>, Response = GatewayResponse, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = GatewayResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let future = self.inner.call(req);
        Box::pin(async move {
            Ok(match future.await {
                Ok(response) => response,
                Err(error) => error_response(&error),
            })
        })
    }
}
