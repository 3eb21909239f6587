//! The `modegate` command line: serve, check-config, simulate, demo.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Proxies allocate and free small buffers on every request; mimalloc does that markedly
/// faster than the system allocator (see bench/results.md). Built without transparent huge
/// pages (Cargo.toml), so resident memory follows what is in use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use modegate::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use modegate::server::{shutdown_channel, Shutdown};
use modegate::simulator::Seed;
use modegate::{logging, App};

/// Reverse-proxy policy gateway for the Sinch Conversation API.
#[derive(Debug, Parser)]
#[command(name = "modegate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long, env = "MODEGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a config file without binding anything (exit 0 valid, 2 invalid).
    CheckConfig {
        /// Config file.
        #[arg(long, env = "MODEGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run the built-in Conversation API simulator (API and OAuth2 token endpoint).
    Simulate {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:3014")]
        listen: SocketAddr,
        /// Seed file (projects, apps, contacts, credentials, faults).
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Also serve the Batch API (its own origin) on this address.
        #[arg(long)]
        batch_listen: Option<SocketAddr>,
    },
    /// Print the migration report of a running gateway as a table.
    Report {
        /// The gateway's admin address.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
    },
    /// Offline quick start: simulator + gateway on 127.0.0.1:8080, admin on 127.0.0.1:9090.
    Demo {
        /// Demo config file (default: the built-in copy of config/demo.toml and its seed).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Proxy listen address, overriding the config (e.g. 0.0.0.0:8080 in a container).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listen address, overriding the config.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
}

/// Resolves on Ctrl-C or SIGTERM.
async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn signal_shutdown() -> Shutdown {
    let (trigger, shutdown) = shutdown_channel();
    tokio::spawn(async move {
        termination().await;
        trigger.trigger();
    });
    shutdown
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("modegate: invalid configuration\n{e}");
        ExitCode::from(2)
    })
}

/// A start-up failure: on stderr whatever the log filter says, and in the log.
fn cannot_start(e: &modegate::StartError) -> ExitCode {
    eprintln!("modegate: cannot start: {e}");
    tracing::error!(error = %e, "cannot start");
    ExitCode::from(e.exit_code() as u8)
}

/// Reloads the config on every SIGHUP.
fn reload_on_hangup(reloader: std::sync::Arc<modegate::reload::Reloader>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            // Reloading reads one small file; doing it here keeps the signal loop simple.
            let _ = reloader.reload();
        }
    });
    #[cfg(not(unix))]
    drop(reloader);
}

async fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(config.log.format, &config.log.level);
    let mut app = match App::bind(config).await {
        Ok(app) => app,
        Err(e) => return cannot_start(&e),
    };
    reload_on_hangup(app.enable_reload(path));
    app.run(signal_shutdown()).await;
    ExitCode::SUCCESS
}

async fn simulate(
    listen: SocketAddr,
    seed: Option<PathBuf>,
    batch_listen: Option<SocketAddr>,
) -> ExitCode {
    logging::init(LogFormat::Text, "info");
    let seed = match seed.map(|p| Seed::load(&p)).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("modegate: invalid seed\n{e}");
            return ExitCode::from(2);
        }
    };
    let (sim, listener) = match modegate::bind_simulator(seed, listen).await {
        Ok(bound) => bound,
        Err(e) => return cannot_start(&e),
    };
    let batch = match batch_listen {
        Some(addr) => match modegate::bind_batch_simulator(addr).await {
            Ok(l) => Some(l),
            Err(e) => return cannot_start(&e),
        },
        None => None,
    };
    let shutdown = signal_shutdown();
    let batch_task = batch.map(|l| {
        tokio::spawn(modegate::serve_batch_simulator(
            sim.clone(),
            l,
            shutdown.clone(),
        ))
    });
    modegate::serve_simulator(sim, listener, shutdown).await;
    if let Some(task) = batch_task {
        let _ = task.await;
    }
    ExitCode::SUCCESS
}

async fn demo(
    path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> ExitCode {
    let loaded = match &path {
        Some(path) => load(path),
        None => modegate::demo::built_in_config().map_err(|e| {
            eprintln!("modegate: invalid configuration\n{e}");
            ExitCode::from(2)
        }),
    };
    let mut config = match loaded {
        Ok(c) => c,
        Err(code) => return code,
    };
    // `--listen` on port 0: every demo listener takes an ephemeral port.
    modegate::reload::apply_listen_overrides(&mut config, listen, admin_listen);
    logging::init(config.log.format, &config.log.level);
    // The callback loop: the built-in consumer the demo's webhook forwards to.
    let ephemeral = listen.is_some_and(|l| l.port() == 0);
    let consumer = match modegate::demo::start_consumer(&mut config, ephemeral).await {
        Ok(consumer) => consumer,
        Err(e) => {
            eprintln!("modegate: cannot start the demo's callback consumer: {e}");
            return ExitCode::from(1);
        }
    };
    let overrides = modegate::reload::Overrides {
        listen,
        admin_listen,
        webhook_targets: consumer.iter().map(|c| c.webhook.clone()).collect(),
    };
    let deps = modegate::Deps {
        pseudo_ids: modegate::demo::pseudo_ids(&config),
        ..modegate::Deps::default()
    };
    let mut app = match App::bind_with(config, deps).await {
        Ok(app) => app,
        Err(e) => return cannot_start(&e),
    };
    if let Some(path) = path {
        reload_on_hangup(app.enable_reload_with(path, overrides));
    }
    let program = std::env::args().next().unwrap_or_else(|| "modegate".into());
    let mut text = modegate::demo::instructions(app.proxy_addr(), app.admin_addr(), &program);
    if let Some(batch) = app.batch_addr() {
        text = text.replacen(
            "Press Ctrl-C to stop.",
            &modegate::demo::batch_instructions(batch, app.admin_addr()),
            1,
        );
    }
    if let (Some(consumer), Some(callbacks), Some(sim)) =
        (consumer, app.callbacks_addr(), app.simulator())
    {
        match modegate::demo::subscribe(&sim, &format!("http://{callbacks}{}", consumer.webhook.0))
            .await
        {
            Ok(()) => {
                text = text.replacen(
                    "Press Ctrl-C to stop.",
                    &modegate::demo::callback_instructions(
                        app.proxy_addr(),
                        callbacks,
                        consumer.addr,
                        app.upstream_uri(),
                    ),
                    1,
                );
            }
            Err(e) => eprintln!("modegate: the demo's webhook was not registered: {e}"),
        }
    }
    println!("{text}");
    app.run(signal_shutdown()).await;
    ExitCode::SUCCESS
}

/// The runtime: one worker thread per CPU, or `TOKIO_WORKER_THREADS`. With one worker, a
/// current-thread runtime (every task on the thread that accepts, no cross-thread wake-ups:
/// less CPU per request, see bench/results.md); `MODEGATE_RUNTIME=multi-thread` keeps the
/// multi-thread scheduler even then.
fn runtime_builder() -> tokio::runtime::Builder {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let forced_multi = std::env::var("MODEGATE_RUNTIME").is_ok_and(|v| v == "multi-thread");
    if workers == 1 && !forced_multi {
        tokio::runtime::Builder::new_current_thread()
    } else {
        // Honours TOKIO_WORKER_THREADS itself.
        tokio::runtime::Builder::new_multi_thread()
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Command::CheckConfig { config } = &cli.command {
        let checked = Config::check(config, modegate::start_problems);
        return match checked {
            Ok(c) => {
                println!("{}: valid\n\n{}", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("modegate: invalid configuration\n{e}");
                ExitCode::from(2)
            }
        };
    }

    let runtime = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modegate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve(config).await,
            Command::Simulate {
                listen,
                seed,
                batch_listen,
            } => simulate(listen, seed, batch_listen).await,
            Command::Demo {
                config,
                listen,
                admin_listen,
            } => demo(config, listen, admin_listen).await,
            Command::Report { admin } => match modegate::report::fetch_table(&admin).await {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("modegate: {e}");
                    ExitCode::from(1)
                }
            },
            Command::CheckConfig { .. } => ExitCode::SUCCESS,
        }
    })
}
