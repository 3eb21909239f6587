//! The gateway through real sockets and as a process: listeners, transport, TLS, hostile and
//! slow peers, upstream faults, reload, replicas over a real Redis, the callback listener, and
//! the `modegate` binary itself. One test binary, so `tests/support/` is built once for all of
//! them.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod attacks;
mod callback_loop;
mod callbacks;
mod cli;
mod differential;
mod differential_upstream;
mod faults;
mod h2_abuse;
mod hostile;
mod inject;
mod pool;
mod proxy;
mod regressions;
mod reload;
mod replicas;
mod slow_peers;
mod tls;
mod tls_cli;
