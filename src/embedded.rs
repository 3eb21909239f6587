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
    /// Its Batch API origin.
    pub(crate) batch_listener: TcpListener,
}

impl EmbeddedSimulator {
    /// Binds the simulator (with `seed`) on two ephemeral loopback ports; returns it with its
    /// Conversation origin, token URL and Batch origin.
    pub(crate) async fn bind(
        seed: Option<&Path>,
    ) -> Result<(EmbeddedSimulator, Uri, Uri, Uri), StartError> {
        let seed = match seed {
            Some(path) => Seed::load(path).map_err(StartError::Seed)?,
            None => Seed::default(),
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let local = |l: &TcpListener| {
            l.local_addr().map_err(|source| StartError::Bind {
                addr: loopback,
                source,
            })
        };
        let (simulator, listener) = bind_simulator(seed, loopback).await?;
        let addr = local(&listener)?;
        let batch_listener = bind_batch_simulator(loopback).await?;
        let batch_addr = local(&batch_listener)?;
        let uri = |text: String| text.parse::<Uri>().unwrap_or_default();
        Ok((
            EmbeddedSimulator {
                simulator,
                listener,
                batch_listener,
            },
            uri(format!("http://{addr}")),
            uri(format!("http://{addr}/oauth2/token")),
            uri(format!("http://{batch_addr}")),
        ))
    }
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
