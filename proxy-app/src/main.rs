//! `proxy-app`: serves services on a Tailscale tailnet to the public internet, configured by
//! a TOML file. All proxy behaviour lives in `proxy-core`; this binary parses the command
//! line, loads the config, and runs a Pingora server.

mod alloc;
#[cfg(feature = "demo")]
mod demo;
mod signals;
mod tailnet_wait;

use clap::{Parser, Subcommand};
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use proxy_core::config::load_file_with;
use proxy_core::{server_conf, EdgeServices, RuntimeConfig};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the proxy path makes a few dozen short-lived
/// allocations per request (header maps, buffers, futures), where glibc's allocator costs
/// about a fifth of the CPU time (`benches/RESULTS.md`).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

/// How long start-up waits for the first lookups of upstream names.
const STARTUP_DNS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "proxy-app",
    version,
    about = "Edge proxy for services on a Tailscale tailnet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given config until SIGTERM (graceful) or SIGINT (fast); SIGHUP
    /// reloads the config.
    Run {
        /// Path to the TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from a running proxy-app (zero-downtime binary
        /// upgrade): start this, then send SIGQUIT to the old process. Both use the
        /// config's `[server] upgrade_sock`.
        #[arg(long)]
        upgrade: bool,
        /// Before opening the public listener, wait until tailscaled reports `Running`
        /// (at most TIMEOUT, default 60s; exits with an error after). Uses
        /// `admin.tailscaled_socket`, else tailscaled's default socket. With `[tailnet]`
        /// (feature `tailscale-rs`), waits for the userspace tailnet node instead: authorized,
        /// and knowing the peer of every `tailscale-rs` upstream.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "60s",
              value_parser = tailnet_wait::parse_timeout)]
        wait_for_tailnet: Option<std::time::Duration>,
    },
    /// Validate a config and exit: 0 if valid, 1 with every error otherwise.
    Check {
        /// Path to the TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained demo: a fake tailnet in-process and the proxy in front of it.
    #[cfg(feature = "demo")]
    Demo {
        /// Public listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Admin listen address.
        #[arg(long, default_value = "127.0.0.1:9091")]
        admin: String,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config: path,
            upgrade,
            wait_for_tailnet,
        } => load(&path).and_then(|config| {
            if upgrade && config.server().upgrade_sock().is_none() {
                anyhow::bail!(
                    "--upgrade needs `upgrade_sock` in [server] of {}, the same socket the running process uses",
                    path.display()
                );
            }
            if let Some(limit) = wait_for_tailnet {
                tailnet_wait::wait_for_tailnet(&config, limit)?;
            }
            serve(config, Some(path), upgrade, wait_for_tailnet)
        }),
        Command::Check { config } => check(&config),
        #[cfg(feature = "demo")]
        Command::Demo { listen, admin } => {
            demo::run(&listen, &admin).and_then(|config| serve(config, None, false, None))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}

fn load(path: &std::path::Path) -> anyhow::Result<RuntimeConfig> {
    load_file_with(path, &plugins::builtin_registry())
        .map_err(|errors| anyhow::anyhow!("invalid config:\n{errors}"))
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    println!(
        "{}: ok ({} sites, {} upstreams)",
        path.display(),
        config.sites().count(),
        config.upstreams().count()
    );
    Ok(())
}

/// Runs a Pingora server for `config` until it shuts down, then writes the access-log lines
/// still waiting, pushes what telemetry still holds, and exits; returns only on a startup
/// error. SIGHUP reloads the config from `config_file`, if it came from one. With `upgrade`,
/// the listening sockets come from the running process (once it gets SIGQUIT) instead of
/// being opened. With `wait_for_tailnet` and a userspace tailnet, the listeners open once it
/// is ready.
fn serve(
    config: RuntimeConfig,
    config_file: Option<PathBuf>,
    upgrade: bool,
    wait_for_tailnet: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let conf = server_conf(config.server());
    let options = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(options, conf);
    let can_upgrade = config.server().upgrade_sock().is_some();
    let listen = config.server().listen().to_vec();
    let admin = config.admin().listen();
    let grace_period = config.server().grace_period();
    let mut services = EdgeServices::new(&server.configuration, config);
    services.trim_memory_with(alloc::give_back_freed_memory);
    services.prime_resolver(STARTUP_DNS_WAIT);
    #[cfg(feature = "tailscale-rs")]
    if let Some(limit) = wait_for_tailnet {
        tailnet_wait::wait_for_userspace_tailnet(services.userspace_tailnet(), limit)?;
    }
    #[cfg(not(feature = "tailscale-rs"))]
    let _ = wait_for_tailnet;
    let access_log = services.observability().access_log().cloned();
    let open_connections = services.open_connections();
    let telemetry = services.telemetry().clone();
    if let Some(log) = &access_log {
        // SIGUSR1 reopens the access-log file (after logrotate moved it).
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, log.reopen_flag())?;
    }
    signals::reload_on_sighup(config_file, services.reloader())?;
    services.add_to(&mut server);
    // After the upstream names resolved: an upgrading process takes the sockets over ready
    // to serve (bootstrap waits for the old process to send them).
    if upgrade {
        tracing::info!(
            "waiting for the running process to hand its sockets over (send it SIGQUIT)"
        );
    }
    server.bootstrap();
    tracing::info!(%admin, "admin listener (metrics, health, readiness)");
    tracing::info!(?listen, "proxy-app {} serving", env!("CARGO_PKG_VERSION"));
    // A graceful shutdown ends as soon as no client connection is left, not after the
    // whole grace period.
    let drained = move || open_connections.count() == 0;
    server.run(RunArgs {
        shutdown_signal: Box::new(signals::ShutdownSignals { can_upgrade }),
        drained: Some(Box::new(drained)),
    });
    if let Some(log) = access_log {
        log.finish();
    }
    // The last lines and a last metrics snapshot go to the homelab, within the grace
    // period (one try per sink: a homelab that is down costs at most its push timeout).
    telemetry.flush(grace_period);
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_demo_is_a_default_feature_only() {
        let parsed = Cli::try_parse_from(["proxy-app", "demo"]);
        assert_eq!(parsed.is_ok(), cfg!(feature = "demo"));
    }

    #[test]
    fn missing_config_file_is_an_error_not_a_panic() {
        let e = check(std::path::Path::new("/nonexistent/edge.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read config file"), "{e}");
    }
}
