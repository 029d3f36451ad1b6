//! Rate limits with nginx `limit_req` semantics, counted in bounded memory.
//!
//! A [`LimitZone`] is a named limit: a [`Rate`], a burst, `nodelay` or `delay = N`, and a
//! [`ZoneKey`] saying what is counted (the client IP, IPv6 folded to a prefix; a header; or
//! the client IP per location). Zones attach to sites and locations; a request passes only
//! if every zone that applies passes ([`acquire_all`]).
//!
//! # Counting and its error bound
//!
//! Each zone runs the leaky bucket as GCRA (a "theoretical arrival time" per key, which is
//! exactly nginx's `excess`), stored in a pingora-limits count-min sketch
//! ([`pingora_limits::estimator::Estimator`], 4 rows x `slots` counters) instead of a map, so
//! a zone's memory is fixed (`4 x 8 x slots` bytes, 512 KiB by default) however many
//! addresses it sees. A key's estimate is the minimum over its 4 counters, and every counter
//! is always at or above the true value of every key hashed to it, so:
//!
//! - the sketch never lets a client through faster than rate + burst (it can only
//!   over-count, never under-count);
//! - a client is over-counted only when, in all 4 rows, it shares a counter with another
//!   client active in the same window (a key counts only while its bucket is non-empty,
//!   i.e. for `(burst + 1) / rate` after its last request). With `n` such clients the chance
//!   is at most `(1 - (1 - 1/slots)^n)^4 ~ (n/slots)^4`: about 1.4e-5 for 1,000 active
//!   clients with the default 16384 slots, and 2e-3 for 3,500. When it happens, the client
//!   is limited as if it shared a bucket with the colliding one. Under a spray of many more
//!   active addresses than slots, limiting degrades toward one shared bucket: too strict,
//!   never too lenient. Raise `slots` for zones expecting many simultaneous clients.
//!
//! Deciding reads a key's estimate and then adds to it; requests of the same key hold the same
//! lock stripe meanwhile, so one client racing itself on many threads is counted exactly.
//! Counters only ever grow (a request rejected by any zone is counted in none, decided before
//! anything is added), which is what keeps every estimate at or above its true value.

mod key;
mod rate;
mod zone;

pub use key::fold_ip;
pub use key::{LimitKey, ZoneKey};
pub use rate::Rate;
pub use zone::{acquire_all, LimitOutcome, LimitZone, ZoneSettings, ZoneVerdict, DEFAULT_SLOTS};
