//! Automatic bans: client addresses banned for a time by rules over what they were answered
//! and which paths they asked for (`[bans]`), answered before routing.
//!
//! Two parts, with different lives:
//!
//! - [`BanTable`]: the bans themselves, one per process, kept across config reloads, bounded
//!   in size, persisted to a state file ([`BanTable::save`], written atomically) and read
//!   back at start. The admin listener lists, adds and lifts bans through it.
//! - `BanRules` (in the compiled config): which answers and paths ban, with bounded counters
//!   per client. A reload brings new rules (and fresh counts).
//!
//! Addresses are IPv4 addresses and IPv6 /64 networks ([`crate::limit::fold_ip`]): an
//! attacker on one IPv6 machine holds a whole /64.
//!
//! Bans shared between machines: every ban added or lifted here is told to the
//! [`BanListener`] set with [`BanTable::set_listener`] (e.g. to publish it), and bans heard
//! from elsewhere come in through [`BanTable::apply_shared`], which tells no listener, so a
//! ban does not echo back and forth.

mod rules;
mod state;

pub(crate) use rules::{BanRule, BanRules, BanTrigger};
pub use state::StateFileError;

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::observe::Metrics;

/// The IPv6 prefix a client's address is folded to for banning.
pub const BAN_IPV6_PREFIX: u8 = 64;

/// `[bans]` settings read when the process starts: where bans are kept and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanSettings {
    /// The state file, if bans are persisted.
    pub state_file: Option<PathBuf>,
    /// Bans held at most.
    pub max_bans: usize,
}

impl Default for BanSettings {
    fn default() -> Self {
        Self {
            state_file: None,
            max_bans: crate::config::file::DEFAULT_MAX_BANS,
        }
    }
}

impl BanSettings {
    /// The process's ban table for these settings (reads the state file).
    pub fn table(&self) -> BanTable {
        BanTable::new(self.max_bans, self.state_file.clone())
    }
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned address: an IPv4 address, or the first address of an IPv6 /64.
    pub ip: IpAddr,
    /// When the ban ends, in seconds since the Unix epoch.
    pub until: u64,
    /// The rule that banned it (`admin` for the admin action).
    pub rule: Arc<str>,
}

/// Told of every ban added or lifted on this machine (not of those applied with
/// [`BanTable::apply_shared`]): the seam for sharing bans between machines. Called on the
/// request path: must not block (queue the event and return).
pub trait BanListener: Send + Sync {
    /// A ban was added (or extended) here.
    fn banned(&self, ban: &Ban);
    /// The ban of `ip` was lifted here.
    fn lifted(&self, ip: IpAddr);
}

/// What a ban holds beside its address.
#[derive(Debug, Clone)]
struct Entry {
    until: u64,
    rule: Arc<str>,
}

/// The process's bans: bounded, persisted, shared by every config the process runs.
pub struct BanTable {
    bans: RwLock<HashMap<IpAddr, Entry>>,
    /// How many bans the map holds (expired ones until swept), read without the lock so a
    /// process without bans pays one atomic load per request.
    held: AtomicUsize,
    max: usize,
    state_file: Option<PathBuf>,
    /// Set when the bans changed since the state file was last written.
    dirty: AtomicBool,
    /// Serialises writes of the state file.
    saving: Mutex<()>,
    /// When a full table may next be swept for expired bans (seconds since the epoch).
    next_sweep: AtomicU64,
    metrics: RwLock<Option<Arc<Metrics>>>,
    listener: RwLock<Option<Arc<dyn BanListener>>>,
}

impl std::fmt::Debug for BanTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanTable")
            .field("held", &self.held.load(Ordering::Relaxed))
            .field("max", &self.max)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `ip` as bans hold it: IPv4 as is (IPv4-mapped IPv6 too), IPv6 folded to its /64.
pub fn ban_key(ip: IpAddr) -> IpAddr {
    crate::limit::fold_ip(ip.to_canonical(), BAN_IPV6_PREFIX)
}

impl BanTable {
    /// A table holding at most `max` bans, kept in `state_file` if given. Reads the state
    /// file now: a missing file is no bans; a damaged one is reported (and its readable
    /// bans kept), never fatal.
    pub fn new(max: usize, state_file: Option<PathBuf>) -> Self {
        let table = Self {
            bans: RwLock::new(HashMap::new()),
            held: AtomicUsize::new(0),
            max: max.max(1),
            state_file,
            dirty: AtomicBool::new(false),
            saving: Mutex::new(()),
            next_sweep: AtomicU64::new(0),
            metrics: RwLock::new(None),
            listener: RwLock::new(None),
        };
        if let Some(path) = &table.state_file {
            match state::read(path) {
                Ok(bans) => {
                    let now = now_secs();
                    let mut map = table.bans.write();
                    for ban in bans.into_iter().filter(|b| b.until > now) {
                        map.insert(
                            ban_key(ban.ip),
                            Entry {
                                until: ban.until,
                                rule: ban.rule,
                            },
                        );
                    }
                    tracing::info!(path = %path.display(), bans = map.len(), "bans loaded");
                    table.held.store(map.len(), Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "bans not loaded"),
            }
        }
        table
    }

    /// Counts bans into `metrics` (`edge_bans_active`, `edge_bans_total`).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        metrics.bans_active(self.active());
        *self.metrics.write() = Some(metrics);
    }

    /// Tells `listener` of every ban added or lifted from now on.
    pub fn set_listener(&self, listener: Arc<dyn BanListener>) {
        *self.listener.write() = Some(listener);
    }

    /// The rule that banned `ip`, if its ban is in force. One atomic load when nothing is
    /// banned, else one hash lookup under a read lock.
    pub fn banned(&self, ip: IpAddr) -> Option<Arc<str>> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let entry = self.bans.read().get(&ban_key(ip)).cloned()?;
        (entry.until > now_secs()).then_some(entry.rule)
    }

    /// Bans `ip` for `duration` by `rule`; returns the ban (a longer ban in force is kept).
    pub fn ban(&self, ip: IpAddr, duration: Duration, rule: &Arc<str>) -> Ban {
        let ban = Ban {
            ip: ban_key(ip),
            until: now_secs().saturating_add(duration.as_secs().max(1)),
            rule: rule.clone(),
        };
        let ban = self.insert(ban, true);
        if let Some(listener) = self.listener.read().as_ref() {
            listener.banned(&ban);
        }
        ban
    }

    /// Applies a ban decided elsewhere (another machine): like [`BanTable::ban`] without
    /// telling the listener, and not counted in `edge_bans_total` (the machine that decided
    /// it counted it). A ban already over is ignored; returns whether it was applied.
    pub fn apply_shared(&self, ban: Ban) -> bool {
        if ban.until <= now_secs() {
            return false;
        }
        let ban = Ban {
            ip: ban_key(ban.ip),
            ..ban
        };
        self.insert(ban, false);
        true
    }

    /// Lifts a ban decided elsewhere, without telling the listener; returns whether one was
    /// held.
    pub fn lift_shared(&self, ip: IpAddr) -> bool {
        self.remove(ip)
    }

    /// Lifts the ban of `ip`; returns whether one was held.
    pub fn lift(&self, ip: IpAddr) -> bool {
        let lifted = self.remove(ip);
        if lifted {
            if let Some(listener) = self.listener.read().as_ref() {
                listener.lifted(ban_key(ip));
            }
        }
        lifted
    }

    /// The bans in force, soonest to end first.
    pub fn list(&self) -> Vec<Ban> {
        let now = now_secs();
        let mut bans: Vec<Ban> = self
            .bans
            .read()
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(ip, e)| Ban {
                ip: *ip,
                until: e.until,
                rule: e.rule.clone(),
            })
            .collect();
        bans.sort_by_key(|a| (a.until, a.ip));
        bans
    }

    /// Bans in force now.
    pub fn active(&self) -> usize {
        let now = now_secs();
        self.bans.read().values().filter(|e| e.until > now).count()
    }

    /// Whether the bans changed since the state file was last written.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Writes the bans in force to the state file (a temporary file beside it, then a
    /// rename, so a crash leaves the old file or the new one, never half of one); drops
    /// expired bans from memory. Nothing to do without a state file. Blocks: call it off
    /// the request path.
    pub fn save(&self) -> Result<(), StateFileError> {
        self.sweep();
        let Some(path) = &self.state_file else {
            self.dirty.store(false, Ordering::Relaxed);
            return Ok(());
        };
        let _one_at_a_time = self.saving.lock();
        self.dirty.store(false, Ordering::Relaxed);
        let result = state::write(path, &self.list());
        if result.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Drops expired bans and updates the active-bans gauge.
    fn sweep(&self) {
        let now = now_secs();
        let mut map = self.bans.write();
        map.retain(|_, e| e.until > now);
        self.held.store(map.len(), Ordering::Relaxed);
        let active = map.len();
        drop(map);
        if let Some(metrics) = self.metrics.read().as_ref() {
            metrics.bans_active(active);
        }
    }

    /// Adds or extends `ban`; `counted`: a new ban is counted by its rule.
    fn insert(&self, ban: Ban, counted: bool) -> Ban {
        let now = now_secs();
        let mut map = self.bans.write();
        if !map.contains_key(&ban.ip) && map.len() >= self.max {
            make_room(&mut map, now, &self.next_sweep);
        }
        let entry = map.entry(ban.ip).or_insert(Entry {
            until: 0,
            rule: ban.rule.clone(),
        });
        let is_new = entry.until <= now;
        if ban.until > entry.until {
            *entry = Entry {
                until: ban.until,
                rule: ban.rule.clone(),
            };
        }
        let kept = Ban {
            ip: ban.ip,
            until: entry.until,
            rule: entry.rule.clone(),
        };
        self.held.store(map.len(), Ordering::Relaxed);
        let held = map.len();
        drop(map);
        self.dirty.store(true, Ordering::Relaxed);
        if let Some(metrics) = self.metrics.read().as_ref() {
            if is_new && counted {
                metrics.ban_added(&ban.rule);
            }
            metrics.bans_active(held);
        }
        kept
    }

    fn remove(&self, ip: IpAddr) -> bool {
        let mut map = self.bans.write();
        let removed = map
            .remove(&ban_key(ip))
            .is_some_and(|e| e.until > now_secs());
        self.held.store(map.len(), Ordering::Relaxed);
        let held = map.len();
        drop(map);
        if removed {
            self.dirty.store(true, Ordering::Relaxed);
            if let Some(metrics) = self.metrics.read().as_ref() {
                metrics.bans_active(held);
            }
        }
        removed
    }
}

/// Bans looked at to choose which one makes way in a full table: enough to find one that
/// ends soon, few enough that a spray of new bans never scans the whole table.
const EVICTION_SAMPLE: usize = 16;

/// Frees one place in a full map: every expired ban (a full sweep, at most once a second),
/// or else the ban ending soonest among a few.
fn make_room(map: &mut HashMap<IpAddr, Entry>, now: u64, next_sweep: &AtomicU64) {
    if now >= next_sweep.load(Ordering::Relaxed) {
        next_sweep.store(now + 1, Ordering::Relaxed);
        let before = map.len();
        map.retain(|_, e| e.until > now);
        if map.len() < before {
            return;
        }
    }
    let soonest = map
        .iter()
        .take(EVICTION_SAMPLE)
        .min_by_key(|(_, e)| e.until)
        .map(|(ip, _)| *ip);
    if let Some(ip) = soonest {
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_is_banned_by_its_64_and_lifting_lifts_it() {
        let table = BanTable::new(10, None);
        let rule: Arc<str> = Arc::from("trap");
        assert!(table.banned(ip("2001:db8:1:2::7")).is_none());
        table.ban(ip("2001:db8:1:2::7"), Duration::from_secs(60), &rule);
        assert_eq!(table.banned(ip("2001:db8:1:2:ffff::1")), Some(rule.clone()));
        assert!(table.banned(ip("2001:db8:1:3::7")).is_none());
        assert_eq!(table.list()[0].ip, ip("2001:db8:1:2::"));
        assert!(table.lift(ip("2001:db8:1:2::99")));
        assert!(table.banned(ip("2001:db8:1:2::7")).is_none());
        assert!(!table.lift(ip("2001:db8:1:2::99")));
    }

    #[test]
    fn memory_is_bounded_and_the_soonest_ending_ban_makes_way() {
        let table = BanTable::new(3, None);
        let rule: Arc<str> = Arc::from("r");
        for (i, secs) in [(1, 300), (2, 100), (3, 200)] {
            table.ban(
                ip(&format!("192.0.2.{i}")),
                Duration::from_secs(secs),
                &rule,
            );
        }
        table.ban(ip("192.0.2.4"), Duration::from_secs(400), &rule);
        assert_eq!(table.list().len(), 3);
        assert!(table.banned(ip("192.0.2.2")).is_none(), "ended soonest");
        for kept in ["192.0.2.1", "192.0.2.3", "192.0.2.4"] {
            assert!(table.banned(ip(kept)).is_some(), "{kept}");
        }
    }

    #[test]
    fn a_spray_of_addresses_keeps_the_table_at_its_bound() {
        let table = BanTable::new(1000, None);
        let rule: Arc<str> = Arc::from("trap");
        for i in 0..20_000u32 {
            table.ban(
                IpAddr::from(i.to_be_bytes()),
                Duration::from_secs(60),
                &rule,
            );
        }
        assert_eq!(table.list().len(), 1000);
        assert!(
            table
                .banned(IpAddr::from(19_999u32.to_be_bytes()))
                .is_some(),
            "the newest is held"
        );
    }

    #[test]
    fn a_longer_ban_in_force_is_kept() {
        let table = BanTable::new(3, None);
        let long: Arc<str> = Arc::from("long");
        let short: Arc<str> = Arc::from("short");
        table.ban(ip("192.0.2.1"), Duration::from_secs(3600), &long);
        let kept = table.ban(ip("192.0.2.1"), Duration::from_secs(60), &short);
        assert_eq!(kept.rule, long);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl BanListener for Recorder {
        fn banned(&self, ban: &Ban) {
            self.0.lock().push(format!("ban {} {}", ban.ip, ban.rule));
        }
        fn lifted(&self, ip: IpAddr) {
            self.0.lock().push(format!("lift {ip}"));
        }
    }

    #[test]
    fn the_listener_hears_local_changes_only() {
        let table = BanTable::new(10, None);
        let heard = Arc::new(Recorder::default());
        table.set_listener(heard.clone());
        let rule: Arc<str> = Arc::from("trap");
        table.ban(ip("192.0.2.1"), Duration::from_secs(60), &rule);
        table.apply_shared(Ban {
            ip: ip("192.0.2.2"),
            until: now_secs() + 60,
            rule: rule.clone(),
        });
        assert!(table.banned(ip("192.0.2.2")).is_some());
        table.lift(ip("192.0.2.1"));
        table.lift_shared(ip("192.0.2.2"));
        assert_eq!(
            *heard.0.lock(),
            vec![
                "ban 192.0.2.1 trap".to_string(),
                "lift 192.0.2.1".to_string()
            ]
        );
    }

    #[test]
    fn bans_survive_a_new_table_on_the_same_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let table = BanTable::new(10, Some(path.clone()));
        let rule: Arc<str> = Arc::from("errors");
        table.ban(ip("192.0.2.9"), Duration::from_secs(600), &rule);
        assert!(table.is_dirty());
        table.save().unwrap();
        assert!(!table.is_dirty());
        let again = BanTable::new(10, Some(path));
        assert_eq!(again.banned(ip("192.0.2.9")), Some(rule));
        assert_eq!(again.active(), 1);
    }
}
