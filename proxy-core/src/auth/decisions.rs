//! [`DecisionCache`]: a forward-auth service's answers remembered for a short time, keyed by
//! the parts of the request the operator names ([`DecisionKey`], e.g. a session cookie), so
//! a page's many requests ask the service once. Bounded: past its capacity, expired
//! answers go, and if none has, all of them.

use http::{HeaderMap, HeaderName};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::AuthVerdict;

/// One part of the request a decision is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyPart {
    /// `cookie:NAME`: the cookie's value.
    Cookie(String),
    /// `header:NAME`: the header's values.
    Header(HeaderName),
}

impl KeyPart {
    /// Parses `cookie:NAME` or `header:NAME`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("cookie", name)) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
                Ok(KeyPart::Cookie(name.to_string()))
            }
            Some(("header", name)) => HeaderName::try_from(name)
                .map(KeyPart::Header)
                .map_err(|_| format!("`{text}`: invalid header name `{name}`")),
            _ => Err(format!("`{text}`: expected `cookie:NAME` or `header:NAME`")),
        }
    }
}

/// What a decision is keyed by: every part must be present, or the answer is not
/// remembered (nor looked up).
#[derive(Debug, Clone)]
pub(crate) struct DecisionKey(Vec<KeyPart>);

impl DecisionKey {
    pub(crate) fn new(parts: Vec<KeyPart>) -> Self {
        Self(parts)
    }

    /// The key of a request with `headers`, if it has every part.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<[u8; 32]> {
        let mut digest = Sha256::new();
        for part in &self.0 {
            let value: Vec<u8> = match part {
                KeyPart::Cookie(name) => cookie(headers, name)?.to_vec(),
                KeyPart::Header(name) => {
                    let mut values = headers.get_all(name).iter().peekable();
                    values.peek()?;
                    values
                        .flat_map(|v| [v.as_bytes(), b"\n"])
                        .flatten()
                        .copied()
                        .collect()
                }
            };
            digest.update((value.len() as u64).to_be_bytes());
            digest.update(&value);
        }
        Some(digest.finalize().into())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            pair.trim_ascii()
                .strip_prefix(name.as_bytes())?
                .strip_prefix(b"=")
        })
}

/// Decisions remembered for `ttl`, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (Instant, AuthVerdict)>>,
}

impl DecisionCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The decision remembered under `key`, if it has not expired.
    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<AuthVerdict> {
        let mut entries = self.entries.lock();
        let (until, verdict) = entries.get(key)?;
        if *until > Instant::now() {
            return Some(verdict.clone());
        }
        entries.remove(key);
        None
    }

    /// Remembers a decision (an error is never remembered: the next request asks again).
    pub(crate) fn put(&self, key: [u8; 32], verdict: &AuthVerdict) {
        if matches!(verdict, AuthVerdict::Error { .. }) {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, verdict.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::try_from(*name).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn keys_need_every_part_and_tell_values_apart() {
        let key = DecisionKey::new(vec![
            KeyPart::parse("cookie:session").unwrap(),
            KeyPart::parse("header:x-tenant").unwrap(),
        ]);
        let a = headers(&[("cookie", "a=1; session=abc"), ("x-tenant", "t1")]);
        let b = headers(&[("cookie", "session=abd"), ("x-tenant", "t1")]);
        assert!(key.of(&a).is_some());
        assert_ne!(key.of(&a), key.of(&b));
        assert_eq!(key.of(&headers(&[("cookie", "session=abc")])), None);
        assert_eq!(key.of(&headers(&[("x-tenant", "t1")])), None);
        assert!(KeyPart::parse("query:x").is_err());
        assert!(KeyPart::parse("cookie:").is_err());
        assert!(KeyPart::parse("header:bad header").is_err());
    }

    #[test]
    fn remembers_decisions_not_errors_and_stays_bounded() {
        let cache = DecisionCache::new(Duration::from_secs(60), 2);
        let allow = AuthVerdict::Allow {
            user: None,
            headers: Vec::new(),
        };
        cache.put([1; 32], &allow);
        cache.put([2; 32], &AuthVerdict::error("down".into()));
        assert!(cache.get(&[1; 32]).is_some());
        assert!(cache.get(&[2; 32]).is_none());
        cache.put([3; 32], &allow);
        cache.put([4; 32], &allow);
        assert!(cache.entries.lock().len() <= 2);
        let expired = DecisionCache::new(Duration::ZERO, 2);
        expired.put([1; 32], &allow);
        assert!(expired.get(&[1; 32]).is_none());
    }
}
