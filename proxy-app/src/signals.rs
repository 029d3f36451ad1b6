//! Signals proxy-app answers besides Pingora's own handling: SIGHUP reloads the config, and
//! SIGQUIT hands the listening sockets to a new process only when an upgrade socket is
//! configured (otherwise it shuts down gracefully, like SIGTERM).
//!
//! | signal | effect |
//! |---|---|
//! | SIGTERM | graceful shutdown: stop accepting, let requests finish within `grace_period` |
//! | SIGINT | fast shutdown |
//! | SIGQUIT | with `[server] upgrade_sock`: send the listening sockets to a new `proxy-app run --upgrade`, then shut down gracefully; without it: graceful shutdown |
//! | SIGHUP | reload the config file |
//! | SIGUSR1 | reopen the access-log file (see `serve`) |

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use proxy_core::ConfigReloader;
use signal_hook::iterator::Signals;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{signal, SignalKind};

/// The shutdown signals of a proxy-app server.
pub struct ShutdownSignals {
    /// Whether an upgrade socket is configured, so SIGQUIT can hand the sockets over.
    pub can_upgrade: bool,
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (quit, terminate, interrupt) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut quit), Ok(mut terminate), Ok(mut interrupt)) = (quit, terminate, interrupt)
        else {
            tracing::error!("cannot listen for shutdown signals; the process must be killed");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = quit.recv() => self.on_quit(),
            _ = terminate.recv() => ShutdownSignal::GracefulTerminate,
            _ = interrupt.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

impl ShutdownSignals {
    fn on_quit(&self) -> ShutdownSignal {
        if self.can_upgrade {
            return ShutdownSignal::GracefulUpgrade;
        }
        tracing::warn!(
            "SIGQUIT without [server] upgrade_sock: no new process can take the sockets over; shutting down gracefully"
        );
        ShutdownSignal::GracefulTerminate
    }
}

/// SIGHUP reloads `config_file` on a thread of its own (the demo, which has no file, only
/// logs that). Without a handler, SIGHUP would end the process.
pub fn reload_on_sighup(
    config_file: Option<PathBuf>,
    reloader: ConfigReloader,
) -> anyhow::Result<()> {
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
fn reload(path: &Path, reloader: &ConfigReloader) {
    let config = match crate::load(path) {
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
