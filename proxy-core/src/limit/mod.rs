//! Rate limits with nginx `limit_req` semantics, counted in bounded memory.
//!
//! A [`LimitZone`] is a named limit: a [`Rate`] and a [`ZoneKey`] saying what is counted (the
//! client IP, IPv6 folded to a prefix; a header; or the client IP per location), as nginx's
//! `limit_req_zone`. Sites and locations apply zones, each with its own [`ZoneUse`] (a burst,
//! `nodelay` or `delay = N`, a status), as nginx's `limit_req`: places sharing a zone share
//! its counters. A request passes only if every zone that applies passes ([`acquire_all`]).
//!
//! # Counting and its error bound
//!
//! Each zone runs the leaky bucket as GCRA: a "theoretical arrival time" (TAT) per key, which
//! is nginx's `excess` in time units. The TATs live in a pingora-limits count-min sketch (4
//! rows of [`pingora_limits::estimator::Estimator`] counters, `slots` wide) instead of a map,
//! so a zone's memory is fixed (`4 x 8 x slots` bytes, 512 KiB by default) however many
//! addresses it sees. Counters are raised with conservative update: each of a key's 4
//! counters becomes the latest TAT of any key hashed to it (a maximum, never a sum), and a
//! key's estimate is the lowest of its 4. Hence:
//!
//! - the estimate is never below the key's true TAT, so the sketch never lets a client
//!   through faster than rate + burst (it can only over-count);
//! - a counter is ahead of the clock only while some key hashed to it has a non-empty
//!   bucket, i.e. for `(burst + 1) / rate` after that key's last request, so old traffic
//!   leaves no trace;
//! - a client is over-counted only when, in all 4 rows, it shares a counter with a client
//!   whose bucket is fuller than its own, and then it is limited as if it had that client's
//!   fill level (never more). With `n` clients active at once, the chance is at most
//!   `(1 - (1 - 1/slots)^n)^4 ~ (n/slots)^4`: about 1.4e-5 for 1,000 active clients with the
//!   default 16384 slots, 2e-3 for 3,500. Under a spray of far more active addresses than
//!   slots, a client degrades toward sharing one bucket with the busiest of them: too
//!   strict, never too lenient. Raise `slots` for zones with many simultaneous clients.
//!
//! A decision reads the counters and then raises them under the zone's lock (as nginx locks
//! its zone), so racing requests are counted exactly. A request rejected by any zone is
//! decided before anything is counted, and is counted in none.

mod concurrency;
mod key;
mod rate;
mod zone;

pub use concurrency::{ConcurrencyPermit, ConcurrencySettings, ConcurrencyZone};
pub use key::fold_ip;
pub use key::{LimitKey, ZoneKey};
pub use rate::Rate;
pub use zone::{
    acquire_all, LimitOutcome, LimitZone, ZoneScope, ZoneSettings, ZoneUse, ZoneVerdict,
};
