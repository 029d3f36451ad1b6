//! Request guards: the checks that run after routing and before a location acts, in the
//! order that makes refusals cheapest: user-agent rules, deny lists, the location's allow
//! list, then rate limits (so refused crawlers and denied clients never spend a token).

mod compile;

pub(crate) use compile::compile_guards;

use bytes::Bytes;
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::access::{IpSet, SiteAccess};
use crate::answer::LocalAnswer;
use crate::limit::{acquire_all, LimitKey, LimitOutcome, LimitZone};
use crate::route::{Location, Site};

/// Guards of every site, by site name.
#[derive(Debug, Default)]
pub struct GuardTable {
    /// Site name -> its guards. Sites without any guard are absent.
    pub sites: HashMap<String, SiteGuards>,
    /// Every rate-limit zone, by name.
    pub zones: HashMap<String, Arc<LimitZone>>,
}

/// One site's guards.
#[derive(Debug, Default)]
pub struct SiteGuards {
    /// Deny lists and user-agent rules.
    pub access: SiteAccess,
    /// Zones applied to every request of the site.
    pub zones: Vec<Arc<LimitZone>>,
    /// Location index -> its guards.
    pub locations: HashMap<usize, LocationGuards>,
}

/// One location's guards.
#[derive(Debug, Default)]
pub struct LocationGuards {
    /// Only these clients may use the location.
    pub allow: Option<IpSet>,
    /// Zones applied on top of the site's.
    pub zones: Vec<Arc<LimitZone>>,
}

/// What the guards decided.
#[derive(Debug)]
pub enum GuardVerdict {
    /// Go on, after holding the request this long (rate-limit `delay` mode); `zones` names
    /// the rate-limit zones that counted the request (for metrics).
    Pass {
        /// How long to hold the request.
        delay: Duration,
        /// Zones that passed it.
        zones: Vec<String>,
    },
    /// Answer with this and stop.
    Refuse(LocalAnswer, Refusal),
}

/// Why a request was refused (for metrics and the access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A user-agent rule matched.
    UserAgent,
    /// The client is on a deny list.
    DenyList,
    /// The client is not on the location's allow list.
    AllowList,
    /// A rate-limit zone (named) rejected it.
    RateLimit(String),
}

impl GuardVerdict {
    fn pass() -> Self {
        GuardVerdict::Pass {
            delay: Duration::ZERO,
            zones: Vec::new(),
        }
    }
}

impl GuardTable {
    /// Runs the guards of `site` and `location` for a request from `client_ip`.
    pub fn check(
        &self,
        site: &Site,
        location: &Location,
        request: &RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> GuardVerdict {
        let Some(guards) = self.sites.get(&site.name) else {
            return GuardVerdict::pass();
        };
        let access = &guards.access;
        // Every User-Agent line counts: a second one must not smuggle a crawler past the rules.
        let mut agents = request.headers.get_all(http::header::USER_AGENT).iter();
        if agents.any(|v| access.is_denied_agent(v.as_bytes())) {
            return refuse(&access.user_agent_body, Refusal::UserAgent);
        }
        if client_ip.is_some_and(|ip| access.is_denied(ip)) {
            return refuse(&access.deny_body, Refusal::DenyList);
        }
        let location_guards = guards.locations.get(&location.index);
        let allow = location_guards.and_then(|l| l.allow.as_ref());
        if allow.is_some_and(|set| !client_ip.is_some_and(|ip| set.contains(ip))) {
            return refuse(&access.deny_body, Refusal::AllowList);
        }
        let extra = location_guards.map_or(&[][..], |l| &l.zones[..]);
        rate_limit(&guards.zones, extra, request, client_ip, site, location)
    }

    /// Takes over the counters of `previous`'s zones that have the same name and settings,
    /// so that a reload does not hand every client a fresh burst (nginx keeps a
    /// `limit_req_zone` across reloads the same way). Returns how many zones were kept.
    pub fn keep_zone_state(&mut self, previous: &GuardTable) -> usize {
        let mut kept = 0;
        for (name, zone) in &mut self.zones {
            if let Some(old) = previous.zones.get(name) {
                if old.settings == zone.settings {
                    *zone = old.clone();
                    kept += 1;
                }
            }
        }
        let zones = &self.zones;
        let share = |list: &mut Vec<Arc<LimitZone>>| {
            for zone in list {
                if let Some(shared) = zones.get(&zone.settings.name) {
                    *zone = shared.clone();
                }
            }
        };
        for site in self.sites.values_mut() {
            share(&mut site.zones);
            for location in site.locations.values_mut() {
                share(&mut location.zones);
            }
        }
        kept
    }
}

fn rate_limit(
    site_zones: &[Arc<LimitZone>],
    location_zones: &[Arc<LimitZone>],
    request: &RequestHeader,
    client_ip: Option<IpAddr>,
    site: &Site,
    location: &Location,
) -> GuardVerdict {
    let keyed: Vec<(&LimitZone, LimitKey<'_>)> = site_zones
        .iter()
        .chain(location_zones)
        .filter_map(|zone| {
            let header = |name: &http::HeaderName| request.headers.get(name).map(|v| v.as_bytes());
            let key = zone.key_for(client_ip, header, (&site.name, location.index))?;
            Some((zone.as_ref(), key))
        })
        .collect();
    if keyed.is_empty() {
        return GuardVerdict::pass();
    }
    match acquire_all(&keyed) {
        LimitOutcome::Pass { delay } => GuardVerdict::Pass {
            delay,
            zones: keyed
                .iter()
                .map(|(zone, _)| zone.settings.name.clone())
                .collect(),
        },
        LimitOutcome::Reject {
            zone,
            status,
            retry_after_secs,
        } => {
            let mut answer = LocalAnswer::text(status, "too many requests\n");
            answer.headers.push((
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_secs),
            ));
            GuardVerdict::Refuse(answer, Refusal::RateLimit(zone))
        }
    }
}

fn refuse(body: &Bytes, why: Refusal) -> GuardVerdict {
    GuardVerdict::Refuse(LocalAnswer::text(403, body.clone()), why)
}
