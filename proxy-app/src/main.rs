//! `proxy-app`: serves services on a Tailscale tailnet to the public internet, configured by
//! a TOML file. All proxy behaviour lives in `proxy-core`; this binary parses the command
//! line, loads the config, and runs a Pingora server.

mod alloc;
mod demo;
mod tailnet_wait;

use clap::{Parser, Subcommand};
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use proxy_core::config::load_file_with;
use proxy_core::{server_conf, ConfigReloader, EdgeServices, RuntimeConfig};
use signal_hook::iterator::Signals;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Serve with the given config until SIGTERM (graceful) or SIGINT (fast).
    Run {
        /// Path to the TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// Before opening the public listener, wait until tailscaled reports `Running`
        /// (at most TIMEOUT, default 60s; exits with an error after). Uses
        /// `admin.tailscaled_socket`, else tailscaled's default socket.
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
            wait_for_tailnet,
        } => load(&path).and_then(|config| {
            if let Some(limit) = wait_for_tailnet {
                tailnet_wait::wait_for_tailnet(&config, limit)?;
            }
            serve(config, Some(path))
        }),
        Command::Check { config } => check(&config),
        Command::Demo { listen, admin } => {
            demo::run(&listen, &admin).and_then(|config| serve(config, None))
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
        config.router.sites().count(),
        config.upstreams.len()
    );
    Ok(())
}

/// Runs a Pingora server for `config` until it shuts down, then writes the access-log lines
/// still waiting and exits; returns only on a startup error. SIGHUP reloads the config
/// from `config_file`, if it came from one.
fn serve(config: RuntimeConfig, config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let conf = server_conf(&config.server);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let listen = config.server.listen.clone();
    let admin = config.observe.admin.listen;
    let services = EdgeServices::new(&server.configuration, Arc::new(config));
    services.prime_resolver(STARTUP_DNS_WAIT);
    let access_log = services.observability.access_log().cloned();
    if let Some(log) = &access_log {
        // SIGUSR1 reopens the access-log file (after logrotate moved it).
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, log.reopen_flag())?;
    }
    reload_on_sighup(config_file, services.reloader())?;
    server.add_service(services.resolver);
    server.add_service(services.admin);
    server.add_service(services.proxy);
    tracing::info!(%admin, "admin listener (metrics, health, readiness)");
    tracing::info!(?listen, "proxy-app {} serving", env!("CARGO_PKG_VERSION"));
    server.run(RunArgs::default());
    if let Some(log) = access_log {
        log.finish();
    }
    std::process::exit(0)
}

/// SIGHUP reloads `config_file` on a thread of its own (the demo, which has no file, only
/// logs that). Without a handler, SIGHUP would end the process.
fn reload_on_sighup(config_file: Option<PathBuf>, reloader: ConfigReloader) -> anyhow::Result<()> {
    let mut signals = Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match &config_file {
                    Some(path) => reload(path, &reloader),
                    None => tracing::warn!("SIGHUP: the demo has no config file to reload"),
                }
            }
        })?;
    Ok(())
}

/// Loads `path` and swaps it in; a config that does not load is logged with every error,
/// and the running one stays.
fn reload(path: &std::path::Path, reloader: &ConfigReloader) {
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => {
            reloader.reject();
            tracing::error!(
                "config reload rejected, the running config stays: {}: {e:#}",
                path.display()
            );
            return;
        }
    };
    let report = reloader.reload(config);
    if !report.needs_restart.is_empty() {
        tracing::warn!(
            sections = ?report.needs_restart,
            "these sections changed but only take effect on a restart; their running values stay"
        );
    }
    tracing::info!(
        sites = report.sites,
        upstreams = report.upstreams,
        rate_limit_zones_kept = report.zones_kept,
        "config reloaded from {}",
        path.display()
    );
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
    fn missing_config_file_is_an_error_not_a_panic() {
        let e = check(std::path::Path::new("/nonexistent/edge.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read config file"), "{e}");
    }
}
