//! The whole gateway stack driven in-process: `modegate::build` with the simulator as the
//! upstream service (no socket on either side), a manual clock, and `tower::ServiceExt::oneshot`
//! for each request. Policy behaviour is tested here; transport stays with the socket tests.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

use modegate::clock::{Clock, ManualClock};
use modegate::domain::Operation;
use modegate::proxy::{Connection, GatewayState};
use modegate::schema::Api;
use modegate::simulator::{Seed, Simulator};
use modegate::Deps;

use super::{config_toml, demo_seed, Reply, DEMO_AUTH};

/// A gateway over an in-process simulator.
pub struct InProc {
    pub state: Arc<GatewayState>,
    pub sim: Arc<Simulator>,
    pub time: Arc<ManualClock>,
}

impl InProc {
    /// The demo seed, configured by `extra` TOML (sections other than `[upstream]`).
    pub fn start(extra: &str) -> InProc {
        InProc::with_seed(demo_seed(), extra)
    }

    pub fn with_seed(seed: Seed, extra: &str) -> InProc {
        InProc::replica(Simulator::new(seed), extra, None)
    }

    /// A gateway over `sim` (which other gateways may share), with the mode cache shared
    /// through the Redis at `redis_url` when given. Inside a Tokio runtime.
    pub fn replica(sim: Arc<Simulator>, extra: &str, redis_url: Option<&str>) -> InProc {
        let config = config_toml(&format!(
            "[upstream]\nbase_url = \"http://api.test\"\nbatch_base_url = \"http://{}\"\n{extra}",
            modegate::simulator::IN_PROCESS_BATCH_HOST
        ));
        let (clock, time) = Clock::manual();
        let deps = Deps {
            upstream: Some(sim.clone().upstream()),
            clock,
            shared_cache: redis_url
                .map(|url| modegate::shared_cache::RedisTarget::parse(url).expect("redis url")),
            ..Deps::default()
        };
        let state = modegate::build(&config, deps).expect("build");
        InProc { state, sim, time }
    }

    /// Sends one request through the whole stack; `path` is relative to the demo project
    /// unless it starts with `/v1/` or `/oauth2/`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.send_on(Api::Conversation, method, path, headers, body)
            .await
    }

    /// A request with the demo credentials on the Batch listener (JSON body when non-empty).
    pub async fn batch(&self, method: Method, path: &str, body: &str) -> Reply {
        self.send_on(
            Api::Batch,
            method,
            path,
            &[("authorization", DEMO_AUTH)],
            body,
        )
        .await
    }

    /// [`InProc::send`] on a listener serving `api`.
    pub async fn send_on(
        &self,
        api: Api,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let uri = if path.starts_with("/v1/") || path.starts_with("/oauth2/") {
            path.to_string()
        } else {
            format!("/v1/projects/demo-project{path}")
        };
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            builder = builder.header("content-type", "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let stack = modegate::proxy::stack(
            self.state.clone(),
            Connection::in_process_for("127.0.0.1:40000".parse().expect("addr"), api),
        );
        let Ok(resp) = stack.oneshot(req).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET with the demo credentials.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[("authorization", DEMO_AUTH)], "")
            .await
    }

    /// POST JSON with the demo credentials.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, &[("authorization", DEMO_AUTH)], body)
            .await
    }

    /// PATCH JSON with the demo credentials.
    pub async fn patch(&self, path: &str, body: &str) -> Reply {
        self.send(Method::PATCH, path, &[("authorization", DEMO_AUTH)], body)
            .await
    }

    /// DELETE with the demo credentials.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, &[("authorization", DEMO_AUTH)], "")
            .await
    }

    /// A GET straight to the simulator, bypassing the gateway.
    pub async fn upstream_get(&self, path: &str) -> Reply {
        self.upstream_send(Method::GET, path, "").await
    }

    /// A request straight to the simulator, bypassing the gateway (JSON body when non-empty).
    pub async fn upstream_send(&self, method: Method, path: &str, body: &str) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("/v1/projects/demo-project{path}"))
            .header("authorization", DEMO_AUTH)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let resp = self.sim.handle(req).await;
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// Calls of `op` the simulator received.
    pub fn calls(&self, op: Operation) -> u64 {
        self.sim.calls(op)
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        self.state.metrics().render()
    }
}

/// `(status, x-modegate-decision, x-modegate-rule)` of a reply.
pub fn verdict(r: &Reply) -> (StatusCode, Option<&str>, Option<&str>) {
    (
        r.status,
        r.header("x-modegate-decision"),
        r.header("x-modegate-rule"),
    )
}
