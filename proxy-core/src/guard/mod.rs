//! Request guards: the checks that run after routing and before a location acts, in the
//! order that makes refusals cheapest: the declared body size, user-agent rules, deny lists,
//! the location's allow list, then rate limits (so refused crawlers and denied clients never
//! spend a token). Each location owns its [`Guards`].

use bytes::Bytes;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::access::{IpSet, SiteAccess};
use crate::answer::LocalAnswer;
use crate::limit::{
    acquire_all, ConcurrencyPermit, ConcurrencyZone, LimitKey, LimitOutcome, LimitZone, ZoneUse,
};

/// A rate-limit zone as a site or location applies it.
pub(crate) type AppliedZone = (Arc<LimitZone>, ZoneUse);

/// One location's guards.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    /// Largest request body accepted, in bytes; 0 means unlimited.
    body_limit: u64,
    /// The site's deny lists and user-agent rules (shared by its locations).
    access: Arc<SiteAccess>,
    /// Only these clients may use the location.
    allow: Option<IpSet>,
    /// Rate-limit zones, each applied its own way: the site's, then the location's own.
    zones: Vec<AppliedZone>,
    /// Connection-limit zones: the site's, then the location's own.
    connection_zones: Vec<Arc<ConcurrencyZone>>,
    /// Whether anything beyond the body limit is checked (most locations check nothing
    /// else, and their requests skip the header lookups).
    rules: bool,
}

/// What the guards decided.
#[derive(Debug)]
pub(crate) enum GuardVerdict<'g> {
    /// Go on, after holding the request for `delay` (rate-limit `delay` mode).
    Pass {
        /// How long to hold the request.
        delay: Duration,
        /// The rate-limit zones that counted the request (for metrics).
        zones: Vec<&'g str>,
        /// The request's places in the connection-limit zones, held until it ends.
        permits: Vec<ConcurrencyPermit>,
    },
    /// Answer with this and stop.
    Refuse(LocalAnswer, Refusal),
}

/// Why a request was refused (for metrics and the access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The declared body is larger than the location accepts.
    BodyTooLarge,
    /// A user-agent rule matched.
    UserAgent,
    /// The client is on a deny list.
    DenyList,
    /// The client is not on the location's allow list.
    AllowList,
    /// A rate-limit zone (named) rejected it.
    RateLimit(String),
    /// A connection-limit zone (named) had as many of its key's requests in progress as
    /// it allows.
    ConnectionLimit(String),
}

impl Refusal {
    /// The `list` label of the deny-hit metric, for refusals by an access rule.
    pub(crate) fn access_list(&self) -> Option<&'static str> {
        match self {
            Refusal::UserAgent => Some("user_agent"),
            Refusal::DenyList => Some("deny_list"),
            Refusal::AllowList => Some("allow_list"),
            Refusal::BodyTooLarge | Refusal::RateLimit(_) | Refusal::ConnectionLimit(_) => None,
        }
    }
}

impl Guards {
    /// Guards for one location.
    pub(crate) fn new(
        body_limit: u64,
        access: Arc<SiteAccess>,
        allow: Option<IpSet>,
        zones: Vec<AppliedZone>,
        connection_zones: Vec<Arc<ConcurrencyZone>>,
    ) -> Self {
        let rules = access.has_rules()
            || allow.is_some()
            || !zones.is_empty()
            || !connection_zones.is_empty();
        Self {
            body_limit,
            access,
            allow,
            zones,
            connection_zones,
            rules,
        }
    }

    /// Largest request body accepted, in bytes; 0 means unlimited.
    pub(crate) fn body_limit(&self) -> u64 {
        self.body_limit
    }

    /// The site's deny lists and user-agent rules.
    #[cfg(test)]
    pub(crate) fn access(&self) -> &SiteAccess {
        &self.access
    }

    /// The location's allow list, if it has one.
    #[cfg(test)]
    pub(crate) fn allow(&self) -> Option<&IpSet> {
        self.allow.as_ref()
    }

    /// The rate-limit zones that count this location's requests, and how each is applied.
    #[cfg(test)]
    pub(crate) fn zones(&self) -> &[AppliedZone] {
        &self.zones
    }

    /// Runs the guards for a request from `client_ip` to the location `location` (site
    /// name and location index, for zones keyed per location).
    pub(crate) fn check(
        &self,
        request: &RequestHeader,
        client_ip: Option<IpAddr>,
        location: (&str, usize),
    ) -> GuardVerdict<'_> {
        if let Some(answer) = self.check_declared_length(request) {
            return GuardVerdict::Refuse(answer, Refusal::BodyTooLarge);
        }
        if !self.rules {
            return GuardVerdict::pass();
        }
        let access = &self.access;
        // Every User-Agent line counts: a second one must not smuggle a crawler past the rules.
        let mut agents = request.headers.get_all(http::header::USER_AGENT).iter();
        if agents.any(|v| access.is_denied_agent(v.as_bytes())) {
            return refuse(access.user_agent_body(), Refusal::UserAgent);
        }
        if client_ip.is_some_and(|ip| access.is_denied(ip)) {
            return refuse(access.deny_body(), Refusal::DenyList);
        }
        let allowed = |set: &IpSet| client_ip.is_some_and(|ip| set.contains(ip));
        if self.allow.as_ref().is_some_and(|set| !allowed(set)) {
            return refuse(access.deny_body(), Refusal::AllowList);
        }
        match self.rate_limit(request, client_ip, location) {
            GuardVerdict::Pass { delay, zones, .. } => {
                match self.connection_limit(request, client_ip, location) {
                    Ok(permits) => GuardVerdict::Pass {
                        delay,
                        zones,
                        permits,
                    },
                    Err(zone) => {
                        let answer = LocalAnswer::text(
                            zone.settings.status,
                            "too many requests in progress\n",
                        );
                        let refusal = Refusal::ConnectionLimit(zone.settings.name.clone());
                        GuardVerdict::Refuse(answer, refusal)
                    }
                }
            }
            refused => refused,
        }
    }

    /// A place in each connection-limit zone that counts the request, or the first zone
    /// that is full (the places already taken are given back).
    fn connection_limit(
        &self,
        request: &RequestHeader,
        client_ip: Option<IpAddr>,
        location: (&str, usize),
    ) -> Result<Vec<ConcurrencyPermit>, &ConcurrencyZone> {
        let mut permits = Vec::new();
        for zone in &self.connection_zones {
            let header = |name: &http::HeaderName| request.headers.get(name).map(|v| v.as_bytes());
            let Some(key) = zone.key_for(client_ip, header, location) else {
                continue;
            };
            match zone.acquire(&key) {
                Some(permit) => permits.push(permit),
                None => return Err(zone),
            }
        }
        Ok(permits)
    }

    /// 413 before reading a body whose declared length is over the limit.
    fn check_declared_length(&self, request: &RequestHeader) -> Option<LocalAnswer> {
        if self.body_limit == 0 {
            return None;
        }
        let declared = request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        (declared > self.body_limit)
            .then(|| LocalAnswer::text(413, "request body too large\n").closing())
    }

    fn rate_limit(
        &self,
        request: &RequestHeader,
        client_ip: Option<IpAddr>,
        location: (&str, usize),
    ) -> GuardVerdict<'_> {
        if self.zones.is_empty() {
            return GuardVerdict::pass();
        }
        let keyed: Vec<(&LimitZone, ZoneUse, LimitKey<'_>)> = self
            .zones
            .iter()
            .filter_map(|(zone, usage)| {
                let header =
                    |name: &http::HeaderName| request.headers.get(name).map(|v| v.as_bytes());
                let key = zone.key_for(client_ip, header, location)?;
                Some((zone.as_ref(), *usage, key))
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
                    .map(|(zone, _, _)| zone.settings.name.as_str())
                    .collect(),
                permits: Vec::new(),
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
}

impl GuardVerdict<'_> {
    fn pass() -> Self {
        GuardVerdict::Pass {
            delay: Duration::ZERO,
            zones: Vec::new(),
            permits: Vec::new(),
        }
    }
}

fn refuse(body: &Bytes, why: Refusal) -> GuardVerdict<'static> {
    GuardVerdict::Refuse(LocalAnswer::text(403, body.clone()), why)
}
