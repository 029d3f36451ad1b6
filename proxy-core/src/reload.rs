//! [`ConfigReloader`]: swaps a newly compiled [`RuntimeConfig`] into a running proxy.
//!
//! A reload changes what requests see: sites, hosts, locations, upstreams, cache policies,
//! guards (deny and allow lists, user-agent rules, rate limits), plugins, the client-IP
//! policy, the health path and the unknown-host answer. Requests already running finish on
//! the config they started with.
//!
//! What the process bound when it started stays as it is: listeners, threads and shutdown
//! timings (`[server]`), the admin listener and the access log (`[admin]`,
//! `[access_log]`), the resolver's nameservers and timings (`[resolver]`), the cache's
//! storage (`[cache]`), the telemetry shippers (`[telemetry]`: receivers, buffers and
//! labels; the receivers' names stay resolved), the userspace tailnet node (`[tailnet]`),
//! the fleet's Redis (`[redis]`) and where bans are kept (`[bans]` `state_file`,
//! `max_bans`; the ban rules reload, their counts start again). A reload that changes those
//! keeps the running values and names the sections, so the operator knows a restart is
//! needed for them.
//!
//! It is not a file watcher or a signal handler: the embedding app decides when to reload
//! and where the new config comes from (`proxy-app` reloads its file on SIGHUP).

use arc_swap::ArcSwap;
use std::sync::Arc;

use crate::model::RuntimeConfig;
use crate::observe::Metrics;
use crate::upstream::MagicDnsResolver;

/// Applies new configs to a running proxy, atomically.
#[derive(Clone)]
pub struct ConfigReloader {
    config: Arc<ArcSwap<RuntimeConfig>>,
    resolver: Arc<MagicDnsResolver>,
    metrics: Arc<Metrics>,
    #[cfg(feature = "tailscale-rs")]
    userspace: Option<Arc<crate::tailnet::UserspaceTailnet>>,
}

/// What a reload applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sections that changed but need a restart; their running values were kept.
    pub needs_restart: Vec<&'static str>,
    /// Rate- and connection-limit zones whose counters carried over (same name and settings).
    pub zones_kept: usize,
    /// Sites in the config now running.
    pub sites: usize,
    /// Upstreams in the config now running.
    pub upstreams: usize,
}

impl ConfigReloader {
    /// A reloader for the proxy reading `config`, whose upstream names `resolver` keeps
    /// resolved; reloads are counted in `metrics`.
    pub fn new(
        config: Arc<ArcSwap<RuntimeConfig>>,
        resolver: Arc<MagicDnsResolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            resolver,
            metrics,
            #[cfg(feature = "tailscale-rs")]
            userspace: None,
        }
    }

    /// Hands the `tailscale-rs` upstreams of each new config to `userspace`, which resolves
    /// their peer names and dials them.
    #[cfg(feature = "tailscale-rs")]
    pub fn with_userspace_tailnet(
        mut self,
        userspace: Arc<crate::tailnet::UserspaceTailnet>,
    ) -> Self {
        self.userspace = Some(userspace);
        self
    }

    /// The config requests run on now.
    pub fn current(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }

    /// Swaps `next` in. Upstream names already resolved keep their last answer, so no
    /// request sees an unresolved upstream because of the reload; the resolver starts
    /// tracking names that are new. Checked upstreams whose addresses and checks did not
    /// change keep their health state; the running ones' checks stop.
    pub fn reload(&self, mut next: RuntimeConfig) -> ReloadReport {
        let running = self.config.load_full();
        let needs_restart = keep_startup_settings(&mut next, &running);
        let zones_kept = keep_zone_counters(&next, &running);
        self.resolver
            .adopt(next.upstreams.values(), next.other_names());
        next.resolve_auth_names_with(&self.resolver);
        #[cfg(feature = "tailscale-rs")]
        if let Some(userspace) = &self.userspace {
            userspace.adopt(next.upstreams.values());
        }
        let report = ReloadReport {
            needs_restart,
            zones_kept,
            sites: next.sites().count(),
            upstreams: next.upstreams.len(),
        };
        self.config.store(Arc::new(next));
        self.metrics.config_reload(true);
        report
    }

    /// Records a reload that was not applied (the new config did not load); the running
    /// config stays.
    pub fn reject(&self) {
        self.metrics.config_reload(false);
    }
}

/// Puts the running values of startup-bound sections back into `next`; returns the names
/// of those that differed.
fn keep_startup_settings(next: &mut RuntimeConfig, running: &RuntimeConfig) -> Vec<&'static str> {
    let mut kept = Vec::new();
    keep_running(&mut next.server, &running.server, "server", &mut kept);
    keep_running(&mut next.admin, &running.admin, "admin", &mut kept);
    let access_log = &running.access_log;
    keep_running(&mut next.access_log, access_log, "access_log", &mut kept);
    keep_running(&mut next.resolver, &running.resolver, "resolver", &mut kept);
    keep_running(&mut next.cache, &running.cache, "cache", &mut kept);
    let telemetry = &running.telemetry;
    keep_running(&mut next.telemetry, telemetry, "telemetry", &mut kept);
    keep_running(&mut next.tailnet, &running.tailnet, "tailnet", &mut kept);
    keep_running(&mut next.fleet, &running.fleet, "redis", &mut kept);
    let bans = &running.ban_settings;
    keep_running(&mut next.ban_settings, bans, "bans", &mut kept);
    kept
}

/// Hands the counters of `running`'s zones to `next`'s zones of the same name and settings,
/// so that a reload does not hand every client a fresh burst (nginx keeps a
/// `limit_req_zone` across reloads the same way). Returns how many zones were kept. `next`
/// has served no request yet, so its zones have counted nothing.
fn keep_zone_counters(next: &RuntimeConfig, running: &RuntimeConfig) -> usize {
    let rate = next.zones.iter().filter(|(name, zone)| {
        running
            .zones
            .get(*name)
            .is_some_and(|old| zone.keep_counters(old))
    });
    // Requests in progress across the reload still count in their connection-limit zones.
    let connection = next.connection_zones.iter().filter(|(name, zone)| {
        running
            .connection_zones
            .get(*name)
            .is_some_and(|old| zone.keep_counts(old))
    });
    rate.count() + connection.count()
}

/// Sets `next` back to `running` if they differ, noting `name` in `kept`.
fn keep_running<T: PartialEq + Clone>(
    next: &mut T,
    running: &T,
    name: &'static str,
    kept: &mut Vec<&'static str>,
) {
    if next != running {
        *next = running.clone();
        kept.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn compile(text: &str) -> RuntimeConfig {
        match load_str(text, None, std::path::Path::new(".")) {
            Ok(config) => config,
            Err(errors) => panic!("config does not compile:\n{errors}"),
        }
    }

    const BASE: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[rate_limits.per_ip]
rate = "10r/s"
burst = 5

[rate_limits.strict]
rate = "1r/s"

[upstreams.docs]
address = "127.0.0.1:9000"

[sites.docs]
hosts = ["docs.example.com"]
rate_limits = ["per_ip", "strict"]

[[sites.docs.locations]]
match = "/"
proxy = "docs"
"#;

    fn reloader(config: RuntimeConfig) -> ConfigReloader {
        let resolver = Arc::new(MagicDnsResolver::new(config.resolver.clone()));
        ConfigReloader::new(
            Arc::new(ArcSwap::from_pointee(config)),
            resolver,
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn startup_sections_keep_their_running_values_and_are_named() {
        let reloader = reloader(compile(BASE));
        let changed = BASE.replace("127.0.0.1:8080", "127.0.0.1:8081")
            + "\n[cache]\nmax_size = \"1m\"\n[resolver]\nnameservers = [\"127.0.0.1:53\"]\n";
        let changed = changed.replace("docs.example.com", "docs.example.org");
        let report = reloader.reload(compile(&changed));
        assert_eq!(report.needs_restart, ["server", "resolver", "cache"]);
        let running = reloader.current();
        assert_eq!(running.server.listen[0].port(), 8080);
        assert!(running.site_for_host("docs.example.org").is_some());
        assert!(running.site_for_host("docs.example.com").is_none());
        let rendered = reloader.metrics.render();
        assert!(
            rendered.contains("edge_config_reloads_total{result=\"applied\"} 1"),
            "{rendered}"
        );
    }

    #[test]
    fn zones_counting_alike_keep_their_counters_and_changed_ones_start_afresh() {
        let reloader = reloader(compile(BASE));
        let before = reloader.current();
        let (strict_before, per_ip_before) = (&before.zones["strict"], &before.zones["per_ip"]);
        let client = Some("192.0.2.1".parse().unwrap());
        let request = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        let location = |config: &RuntimeConfig| {
            let site = config.site_for_host("docs.example.com").cloned().unwrap();
            site.location_for_path(b"/").cloned().unwrap()
        };
        // One request counts in both zones (and uses strict's one token).
        let first_location = location(&before);
        let first = first_location.guards().check(&request, client, ("docs", 0));
        assert!(matches!(first, crate::guard::GuardVerdict::Pass { .. }));
        // How a zone is applied (its burst) does not matter to its counters; its rate does.
        let report = reloader.reload(compile(
            &BASE
                .replace("burst = 5", "burst = 6")
                .replace("rate = \"10r/s\"", "rate = \"20r/s\""),
        ));
        assert_eq!(report.zones_kept, 1);
        let running = reloader.current();
        assert!(running.zones["strict"].shares_counters_with(strict_before));
        assert!(!running.zones["per_ip"].shares_counters_with(per_ip_before));
        // The location counts with the kept counters: strict's token is still spent.
        let second_location = location(&running);
        let second = second_location
            .guards()
            .check(&request, client, ("docs", 0));
        assert!(
            matches!(second, crate::guard::GuardVerdict::Refuse(_, crate::guard::Refusal::RateLimit(ref zone)) if zone == "strict"),
            "{second:?}"
        );
    }

    #[test]
    fn a_rejected_reload_is_counted_and_changes_nothing() {
        let reloader = reloader(compile(BASE));
        let before = reloader.current();
        reloader.reject();
        assert!(Arc::ptr_eq(&before, &reloader.current()));
        let rendered = reloader.metrics.render();
        assert!(
            rendered.contains("edge_config_reloads_total{result=\"rejected\"} 1"),
            "{rendered}"
        );
        assert!(
            rendered.contains("edge_config_last_reload_successful 0"),
            "{rendered}"
        );
    }
}
