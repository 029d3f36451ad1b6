//! `balance = "least_conn"` (nginx's `least_conn`): the address with the fewest requests in
//! flight through this proxy, ties taken in turn so that equal load spreads.
//!
//! pingora-load-balancing has no such selector; this one plugs into its
//! [`BackendSelection`] and [`BackendIter`] traits. Each address's count lives in an
//! [`InFlightCounters`] table that outlives selector rebuilds (membership refreshes) and
//! reloads that keep the upstream, and travels with the address in its `Backend`'s
//! extensions, so a pick needs no lock. A request holds an [`AddressInFlight`] guard from its pick
//! until its context is dropped, whichever way it ends.

use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Requests in flight to one address.
#[derive(Debug, Default)]
pub(crate) struct AddressLoad(AtomicUsize);

impl AddressLoad {
    fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request in flight to an address: counted while it lives.
#[derive(Debug)]
pub(crate) struct AddressInFlight(Arc<AddressLoad>);

impl AddressInFlight {
    /// Counts one more request on `load` until the guard is dropped.
    pub(crate) fn start(load: Arc<AddressLoad>) -> Self {
        load.0.fetch_add(1, Ordering::Relaxed);
        Self(load)
    }
}

impl Drop for AddressInFlight {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The in-flight count of every address of a pool, by address.
#[derive(Debug, Default)]
pub(crate) struct InFlightCounters {
    by_address: Mutex<HashMap<SocketAddr, Arc<AddressLoad>>>,
}

impl InFlightCounters {
    /// Attaches each address's count to its backend (created at 0 for a new address);
    /// forgets addresses no longer listed (a request still in flight keeps its own handle).
    pub(crate) fn attach(&self, backends: &mut BTreeSet<Backend>) {
        let mut by_address = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let listed: Vec<SocketAddr> = backends
            .iter()
            .filter_map(|b| b.addr.as_inet().copied())
            .collect();
        by_address.retain(|addr, _| listed.contains(addr));
        let attached = std::mem::take(backends);
        for mut b in attached {
            if let Some(addr) = b.addr.as_inet() {
                let load = by_address.entry(*addr).or_default().clone();
                b.ext.insert(load);
            }
            backends.insert(b);
        }
    }
}

/// The count a backend carries, if the pool balances by least connections.
pub(crate) fn load_of(backend: &Backend) -> Option<Arc<AddressLoad>> {
    backend.ext.get::<Arc<AddressLoad>>().cloned()
}

/// Selector: the backends and the turn used to break ties.
pub(crate) struct LeastConn {
    backends: Box<[Backend]>,
    loads: Box<[Option<Arc<AddressLoad>>]>,
    turn: AtomicUsize,
}

impl BackendSelection for LeastConn {
    type Iter = LeastConnIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let backends: Box<[Backend]> = backends.iter().cloned().collect();
        let loads = backends.iter().map(load_of).collect();
        Self {
            backends,
            loads,
            turn: AtomicUsize::new(0),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastConnIter {
        let n = self.backends.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let load = |i: usize| self.loads[i].as_ref().map_or(0, |l| l.current());
        let ring = n.max(1);
        let mut order: Vec<usize> = (0..n).collect();
        // Fewest in flight first; among equals, the one whose turn comes first.
        order.sort_by_key(|&i| (load(i), (i + ring - start % ring) % ring));
        LeastConnIter {
            selector: self.clone(),
            order,
            next: 0,
        }
    }
}

/// The backends of one pick, least loaded first.
pub(crate) struct LeastConnIter {
    selector: Arc<LeastConn>,
    order: Vec<usize>,
    next: usize,
}

impl BackendIter for LeastConnIter {
    fn next(&mut self) -> Option<&Backend> {
        let i = *self.order.get(self.next)?;
        self.next += 1;
        self.selector.backends.get(i)
    }
}

/// A backend for `addr` (weight 1, no extensions).
pub(crate) fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: PeerAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(counters: &InFlightCounters, addrs: &[&str]) -> Arc<LeastConn> {
        let mut set: BTreeSet<Backend> = addrs
            .iter()
            .map(|a| backend(a.parse().expect("address")))
            .collect();
        counters.attach(&mut set);
        Arc::new(LeastConn::build(&set))
    }

    fn first(selector: &Arc<LeastConn>) -> Backend {
        selector.iter(b"").next().cloned().expect("a backend")
    }

    #[test]
    fn the_least_loaded_address_is_picked_and_ties_take_turns() {
        let counters = InFlightCounters::default();
        let lc = selector(&counters, &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        // Equal load: each in turn.
        let picks: BTreeSet<String> = (0..3).map(|_| first(&lc).addr.to_string()).collect();
        assert_eq!(picks.len(), 3, "{picks:?}");
        // Two held on .1 and one on .2: .3 every time.
        let one = load_of(&lc.backends[0]).expect("counted");
        let two = load_of(&lc.backends[1]).expect("counted");
        let held = [
            AddressInFlight::start(one.clone()),
            AddressInFlight::start(one),
            AddressInFlight::start(two),
        ];
        for _ in 0..4 {
            assert_eq!(first(&lc).addr.to_string(), "10.0.0.3:80");
        }
        // Every guard dropped (the requests ended, however): the counts are back to 0.
        drop(held);
        let picks: BTreeSet<String> = (0..3).map(|_| first(&lc).addr.to_string()).collect();
        assert_eq!(picks.len(), 3, "{picks:?}");
    }

    #[test]
    fn counts_outlive_a_rebuild_and_forget_removed_addresses() {
        let counters = InFlightCounters::default();
        let lc = selector(&counters, &["10.0.0.1:80", "10.0.0.2:80"]);
        let _held = AddressInFlight::start(load_of(&lc.backends[0]).expect("counted"));
        let rebuilt = selector(&counters, &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        assert_eq!(load_of(&rebuilt.backends[0]).map(|l| l.current()), Some(1));
        let _ = selector(&counters, &["10.0.0.2:80"]);
        let by_address = counters.by_address.lock().expect("lock");
        assert_eq!(by_address.len(), 1);
    }
}
