//! `BanRules`: which answers and paths ban a client (`[[bans.rules]]`), and the bounded
//! per-client counts of status rules.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ban_key;
use crate::access::IpSet;
use crate::answer::LocalAnswer;

/// The compiled `[bans]` rules of one config.
#[derive(Debug, Default)]
pub(crate) struct BanRules {
    rules: Vec<BanRule>,
    exempt: IpSet,
    status: u16,
    body: Bytes,
    has_traps: bool,
    has_status_rules: bool,
}

/// One rule.
#[derive(Debug)]
pub(crate) struct BanRule {
    /// Its name, for metrics, the access log and the admin listing.
    pub(crate) name: Arc<str>,
    /// How long its bans last.
    pub(crate) duration: Duration,
    /// What trips it.
    pub(crate) trigger: BanTrigger,
}

/// What trips a rule.
#[derive(Debug)]
pub(crate) enum BanTrigger {
    /// `count` answers with one of `statuses` within the window its counts keep.
    Statuses {
        statuses: Vec<u16>,
        count: u32,
        counts: Mutex<Counts>,
    },
    /// Any request whose path starts with one of these.
    Paths(Vec<String>),
}

impl BanTrigger {
    /// A status trigger counting at most `max_tracked` clients at once.
    pub(crate) fn statuses(
        statuses: Vec<u16>,
        count: u32,
        window: Duration,
        max_tracked: usize,
    ) -> Self {
        BanTrigger::Statuses {
            statuses,
            count: count.max(1),
            counts: Mutex::new(Counts::new(max_tracked, window)),
        }
    }
}

/// Answers counted per client in fixed windows, for at most `max` clients: past it, expired
/// counts are dropped (at most every quarter window), else any one. Forgetting can only let
/// a client escape counting, never count one client's answers against another.
#[derive(Debug)]
pub(crate) struct Counts {
    clients: HashMap<IpAddr, (Instant, u32)>,
    max: usize,
    window: Duration,
    next_sweep: Instant,
}

impl Counts {
    fn new(max: usize, window: Duration) -> Self {
        Self {
            clients: HashMap::new(),
            max: max.max(1),
            window,
            next_sweep: Instant::now(),
        }
    }

    /// Counts one answer for `ip` at `now`; returns the count in its window so far.
    fn add(&mut self, ip: IpAddr, now: Instant) -> u32 {
        if !self.clients.contains_key(&ip) && self.clients.len() >= self.max {
            self.make_room(now);
        }
        let (start, count) = self.clients.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        *count
    }

    fn make_room(&mut self, now: Instant) {
        if now >= self.next_sweep {
            let window = self.window;
            self.clients
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            self.next_sweep = now + (window / 4).max(Duration::from_secs(1));
        }
        if self.clients.len() >= self.max {
            if let Some(any) = self.clients.keys().next().copied() {
                self.clients.remove(&any);
            }
        }
    }

    fn forget(&mut self, ip: IpAddr) {
        self.clients.remove(&ip);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients.len()
    }
}

impl BanRules {
    /// Rules answering banned clients with `status` and `body`; clients in `exempt` are
    /// never banned.
    pub(crate) fn new(rules: Vec<BanRule>, exempt: IpSet, status: u16, body: Bytes) -> Self {
        let has_traps = rules
            .iter()
            .any(|r| matches!(r.trigger, BanTrigger::Paths(_)));
        let has_status_rules = rules
            .iter()
            .any(|r| matches!(r.trigger, BanTrigger::Statuses { .. }));
        Self {
            rules,
            exempt,
            status,
            body,
            has_traps,
            has_status_rules,
        }
    }

    /// The answer to a banned client.
    pub(crate) fn refusal(&self) -> LocalAnswer {
        let status = if self.status == 0 { 403 } else { self.status };
        LocalAnswer::text(status, self.body.clone())
    }

    /// Whether any rule bans on a request's path.
    pub(crate) fn has_traps(&self) -> bool {
        self.has_traps
    }

    /// The trap rule a request for `path` from `ip` trips, if any.
    pub(crate) fn trap(&self, ip: IpAddr, path: &str) -> Option<&BanRule> {
        if !self.has_traps {
            return None;
        }
        let rule = self.rules.iter().find(|rule| match &rule.trigger {
            BanTrigger::Paths(paths) => paths.iter().any(|p| path.starts_with(p.as_str())),
            BanTrigger::Statuses { .. } => false,
        })?;
        (!self.exempt.contains(ip)).then_some(rule)
    }

    /// Counts an answer of `status` to `ip`; returns the rule it trips, if any (its count
    /// for the client starts again).
    pub(crate) fn count_answer(&self, ip: IpAddr, status: u16) -> Option<&BanRule> {
        if !self.has_status_rules {
            return None;
        }
        let now = Instant::now();
        let mut tripped = None;
        for rule in &self.rules {
            let BanTrigger::Statuses {
                statuses,
                count,
                counts,
                ..
            } = &rule.trigger
            else {
                continue;
            };
            if !statuses.contains(&status) {
                continue;
            }
            if self.exempt.contains(ip) {
                return None;
            }
            let key = ban_key(ip);
            let mut counts = counts.lock();
            if counts.add(key, now) >= *count {
                counts.forget(key);
                tripped = tripped.or(Some(rule));
            }
        }
        tripped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn rules(exempt: &[&str]) -> BanRules {
        let mut set = IpSet::default();
        for net in exempt {
            set.insert(crate::access::parse_net(net).unwrap());
        }
        BanRules::new(
            vec![
                BanRule {
                    name: Arc::from("errors"),
                    duration: Duration::from_secs(60),
                    trigger: BanTrigger::statuses(vec![404, 429], 3, Duration::from_secs(60), 100),
                },
                BanRule {
                    name: Arc::from("trap"),
                    duration: Duration::from_secs(600),
                    trigger: BanTrigger::Paths(vec!["/wp-login.php".into(), "/.env".into()]),
                },
            ],
            set,
            403,
            Bytes::from_static(b"banned\n"),
        )
    }

    #[test]
    fn the_nth_counted_answer_in_the_window_trips_the_rule() {
        let rules = rules(&[]);
        let client = ip("192.0.2.1");
        assert!(rules.count_answer(client, 404).is_none());
        assert!(rules.count_answer(client, 200).is_none(), "not counted");
        assert!(rules.count_answer(ip("192.0.2.2"), 404).is_none());
        assert!(rules.count_answer(client, 429).is_none());
        let rule = rules.count_answer(client, 404).map(|r| r.name.to_string());
        assert_eq!(rule.as_deref(), Some("errors"));
        // IPv6 clients are counted by their /64.
        for host in ["2001:db8::1", "2001:db8::2"] {
            assert!(rules.count_answer(ip(host), 404).is_none());
        }
        assert!(rules.count_answer(ip("2001:db8::3"), 404).is_some());
    }

    #[test]
    fn trap_paths_and_exemptions() {
        let rules = rules(&["198.51.100.0/24"]);
        let trapped = rules
            .trap(ip("192.0.2.1"), "/.env.local")
            .map(|r| r.name.as_ref());
        assert_eq!(trapped, Some("trap"));
        assert!(rules.trap(ip("192.0.2.1"), "/index.html").is_none());
        assert!(rules.trap(ip("198.51.100.7"), "/.env").is_none(), "exempt");
        for _ in 0..10 {
            assert!(rules.count_answer(ip("198.51.100.7"), 404).is_none());
        }
    }

    #[test]
    fn counts_stay_bounded_under_a_spray_of_addresses() {
        let mut counts = Counts::new(100, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..10_000u32 {
            counts.add(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(counts.len() <= 100);
    }

    #[test]
    fn a_new_window_starts_the_count_again() {
        let mut counts = Counts::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let client = ip("192.0.2.1");
        assert_eq!(counts.add(client, now), 1);
        assert_eq!(counts.add(client, now + Duration::from_secs(30)), 2);
        assert_eq!(counts.add(client, now + Duration::from_secs(61)), 1);
    }
}
