//! The embedded simulator's listeners (`upstream.base_url = "embedded"`), and binding and
//! serving a simulator's two origins for `modegate simulate`: the Conversation API (and its
//! token endpoint) on one port, the Batch API on another.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::Uri;
use tokio::net::TcpListener;

use super::{bind, StartError};
use crate::server::{self, ConnectionSettings, Shutdown};
use crate::simulator::{Seed, Simulator};

/// A simulator bound to a listener, not yet serving.
pub(crate) struct EmbeddedSimulator {
    pub(crate) simulator: Arc<Simulator>,
    pub(crate) listener: TcpListener,
    /// Its Batch API origin (bound after the gateway's own listeners).
    pub(crate) batch_listener: Option<TcpListener>,
}

impl EmbeddedSimulator {
    /// Binds the simulator (with `seed`) on an ephemeral loopback port; returns it with its
    /// Conversation origin and token URL.
    pub(crate) async fn bind(
        seed: Option<&Path>,
    ) -> Result<(EmbeddedSimulator, Uri, Uri), StartError> {
        let seed = match seed {
            Some(path) => Seed::load(path).map_err(StartError::Seed)?,
            None => Seed::default(),
        };
        let (simulator, listener) = bind_simulator(seed, LOOPBACK).await?;
        let addr = local(&listener)?;
        Ok((
            EmbeddedSimulator {
                simulator,
                listener,
                batch_listener: None,
            },
            uri(format!("http://{addr}")),
            uri(format!("http://{addr}/oauth2/token")),
        ))
    }

    /// Binds its Batch origin on another ephemeral loopback port; returns that origin.
    pub(crate) async fn bind_batch(&mut self) -> Result<Uri, StartError> {
        let listener = bind_batch_simulator(LOOPBACK).await?;
        let addr = local(&listener)?;
        self.batch_listener = Some(listener);
        Ok(uri(format!("http://{addr}")))
    }
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

fn local(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: LOOPBACK,
        source,
    })
}

fn uri(text: String) -> Uri {
    text.parse().unwrap_or_default()
}

/// Binds a simulator on `addr` (logged as `listening on ADDR`).
pub async fn bind_simulator(
    seed: Seed,
    addr: SocketAddr,
) -> Result<(Arc<Simulator>, TcpListener), StartError> {
    let listener = bind("simulator", addr).await?;
    Ok((Simulator::new(seed), listener))
}

/// Serves a simulator until `shutdown`.
pub async fn serve_simulator(simulator: Arc<Simulator>, listener: TcpListener, shutdown: Shutdown) {
    let settings = ConnectionSettings {
        shutdown_grace: std::time::Duration::from_secs(5),
        ..ConnectionSettings::default()
    };
    let service = simulator.service();
    server::serve(
        "simulator",
        listener,
        move |_: server::ConnectionInfo| service.clone(),
        settings,
        shutdown,
    )
    .await;
}

/// Serves a simulator's Batch API origin on `listener` until `shutdown`.
pub async fn serve_batch_simulator(
    simulator: Arc<Simulator>,
    listener: TcpListener,
    shutdown: Shutdown,
) {
    let service = simulator.batch_service();
    server::serve(
        "simulator-batch",
        listener,
        move |_: server::ConnectionInfo| service.clone(),
        ConnectionSettings {
            shutdown_grace: std::time::Duration::from_secs(5),
            ..ConnectionSettings::default()
        },
        shutdown,
    )
    .await;
}

/// Binds a simulator's Batch API listener on `addr` (logged as `listening on ADDR` with
/// `listener=simulator-batch`).
pub async fn bind_batch_simulator(addr: SocketAddr) -> Result<TcpListener, StartError> {
    bind("simulator-batch", addr).await
}
