//! The challenge's cryptography: signed challenges, the proof-of-work check, and signed
//! clearance cookies. Stateless: everything needed to check a value is in the value and the
//! keys, so any process holding the keys (after a restart, on another machine) checks it.
//!
//! - A **challenge** is `version | difficulty | expiry | 16 random bytes | MAC`, base64url.
//!   The client must find a `nonce` (decimal digits) such that
//!   `SHA-256(challenge text + nonce)` starts with `difficulty` zero bits.
//! - A **clearance cookie** is `version | expiry | MAC`, base64url.
//!
//! Each MAC is HMAC-SHA256 under the signing key over a purpose label, the fields above,
//! the client's network (IPv4 /24, IPv6 /64) and its `User-Agent`: a value taken to another
//! network or browser, or changed in any bit, does not check out. Several keys may check
//! (rotation): the first signs, every one verifies. MACs are compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
const CHALLENGE_LEN: usize = 1 + 1 + 8 + 16 + MAC_LEN;
const COOKIE_LEN: usize = 1 + 8 + MAC_LEN;
/// The longest nonce accepted, in digits (a `u64`).
const MAX_NONCE_DIGITS: usize = 20;

/// Shortest secret key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why a cookie, a challenge or an answer was refused (each counted under its word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not of the format (bad base64, wrong length or version).
    Malformed,
    /// Past its expiry.
    Expired,
    /// The MAC does not check out under any key: tampered, from another network or
    /// browser, or signed with a key no longer configured.
    BadSignature,
    /// The nonce's hash has too few leading zero bits, or the nonce is not digits.
    WrongNonce,
}

impl Refused {
    /// The event word counted for a refused cookie.
    pub fn cookie_event(self) -> &'static str {
        match self {
            Refused::Expired => "cookie_expired",
            _ => "cookie_invalid",
        }
    }

    /// The event word counted for a refused answer.
    pub fn answer_event(self) -> &'static str {
        match self {
            Refused::Expired => "challenge_expired",
            Refused::WrongNonce => "nonce_wrong",
            _ => "challenge_invalid",
        }
    }
}

/// Who a challenge or cookie is bound to: the client's network and user agent.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The client's address (none: bound to "no address").
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header's value (empty if none).
    pub user_agent: &'a [u8],
}

impl Client<'_> {
    /// The network bytes the MAC covers: a tag, then the /24 or /64 prefix.
    fn network(&self) -> ([u8; 9], usize) {
        let mut out = [0u8; 9];
        match self.ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => {
                out[0] = 4;
                out[1..4].copy_from_slice(&v4.octets()[..3]);
                (out, 4)
            }
            Some(IpAddr::V6(v6)) => {
                out[0] = 6;
                out[1..9].copy_from_slice(&v6.octets()[..8]);
                (out, 9)
            }
            None => (out, 1),
        }
    }
}

/// The keys: the first signs, all verify. Each is keyed once; a check clones the keyed
/// state rather than hashing the key again.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.keys.len())
    }
}

impl Keys {
    /// Keys from secrets, the signing one first; `None` if there is none.
    pub fn new<'k>(secrets: impl IntoIterator<Item = &'k [u8]>) -> Option<Self> {
        let keys: Vec<HmacSha256> = secrets
            .into_iter()
            .filter_map(|secret| HmacSha256::new_from_slice(secret).ok())
            .collect();
        (!keys.is_empty()).then_some(Self { keys })
    }

    fn mac(key: &HmacSha256, purpose: &[u8], fields: &[u8], client: &Client<'_>) -> HmacSha256 {
        let mut mac = key.clone();
        let (network, len) = client.network();
        mac.update(purpose);
        mac.update(fields);
        mac.update(&network[..len]);
        mac.update(client.user_agent);
        mac
    }

    fn sign(&self, purpose: &[u8], fields: &[u8], client: &Client<'_>) -> [u8; MAC_LEN] {
        Self::mac(&self.keys[0], purpose, fields, client)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `tag` is the MAC of the fields under any key (constant-time per key).
    fn verify(&self, purpose: &[u8], fields: &[u8], client: &Client<'_>, tag: &[u8]) -> bool {
        self.keys.iter().any(|key| {
            Self::mac(key, purpose, fields, client)
                .verify_slice(tag)
                .is_ok()
        })
    }

    /// A challenge of `difficulty` bits for `client`, to be answered by `expires`
    /// (seconds since the Unix epoch), with 16 bytes of `random`.
    pub fn challenge(
        &self,
        difficulty: u8,
        expires: u64,
        random: [u8; 16],
        client: &Client<'_>,
    ) -> String {
        let mut bytes = [0u8; CHALLENGE_LEN];
        bytes[0] = VERSION;
        bytes[1] = difficulty;
        bytes[2..10].copy_from_slice(&expires.to_be_bytes());
        bytes[10..26].copy_from_slice(&random);
        let tag = self.sign(b"challenge\0", &bytes[..26], client);
        bytes[26..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks an answer: `challenge` was issued by us to `client`, has not expired at
    /// `now`, asks at least `min_difficulty` bits, and `nonce` solves it.
    pub fn check_answer(
        &self,
        challenge: &str,
        nonce: &str,
        min_difficulty: u8,
        now: u64,
        client: &Client<'_>,
    ) -> Result<(), Refused> {
        let mut bytes = [0u8; CHALLENGE_LEN];
        let decoded = URL_SAFE_NO_PAD
            .decode_slice(challenge.as_bytes(), &mut bytes)
            .map_err(|_| Refused::Malformed)?;
        if challenge.len() > 2 * CHALLENGE_LEN || decoded != CHALLENGE_LEN || bytes[0] != VERSION {
            return Err(Refused::Malformed);
        }
        let difficulty = bytes[1];
        let expires = u64::from_be_bytes(bytes[2..10].try_into().map_err(|_| Refused::Malformed)?);
        if !self.verify(b"challenge\0", &bytes[..26], client, &bytes[26..]) {
            return Err(Refused::BadSignature);
        }
        if expires <= now {
            return Err(Refused::Expired);
        }
        if difficulty < min_difficulty || !solves(challenge, nonce, difficulty) {
            return Err(Refused::WrongNonce);
        }
        Ok(())
    }

    /// A clearance cookie's value for `client`, valid until `expires`.
    pub fn cookie(&self, expires: u64, client: &Client<'_>) -> String {
        let mut bytes = [0u8; COOKIE_LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&expires.to_be_bytes());
        let tag = self.sign(b"clearance\0", &bytes[..9], client);
        bytes[9..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks a clearance cookie's value for `client` at `now`. The expiry is checked
    /// before the MAC (the cheap refusal first); nothing in the value is trusted before
    /// the MAC checks out.
    pub fn check_cookie(&self, value: &[u8], now: u64, client: &Client<'_>) -> Result<(), Refused> {
        if value.len() != (COOKIE_LEN * 4).div_ceil(3) {
            return Err(Refused::Malformed);
        }
        let mut bytes = [0u8; COOKIE_LEN];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) {
            Ok(COOKIE_LEN) if bytes[0] == VERSION => {}
            _ => return Err(Refused::Malformed),
        }
        let expires = u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| Refused::Malformed)?);
        if expires <= now {
            return Err(Refused::Expired);
        }
        if !self.verify(b"clearance\0", &bytes[..9], client, &bytes[9..]) {
            return Err(Refused::BadSignature);
        }
        Ok(())
    }
}

/// Whether `SHA-256(challenge + nonce)` has at least `difficulty` leading zero bits, for a
/// nonce of 1 to 20 decimal digits.
pub fn solves(challenge: &str, nonce: &str, difficulty: u8) -> bool {
    let digits = !nonce.is_empty()
        && nonce.len() <= MAX_NONCE_DIGITS
        && nonce.bytes().all(|b| b.is_ascii_digit());
    if !digits {
        return false;
    }
    let digest = Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(nonce.as_bytes())
        .finalize();
    leading_zero_bits(&digest) >= u32::from(difficulty)
}

/// Leading zero bits of `bytes`, read big-endian.
pub fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in bytes {
        if *byte != 0 {
            return bits + byte.leading_zeros();
        }
        bits += 8;
    }
    bits
}

/// The first nonce (counting from 0) that solves `challenge`: what a client's script does.
/// For tests and benchmarks.
pub fn solve(challenge: &str, difficulty: u8) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| solves(challenge, nonce, difficulty))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys(secrets: &[&str]) -> Keys {
        Keys::new(secrets.iter().map(|s| s.as_bytes())).unwrap()
    }

    fn client(ip: &str, ua: &'static str) -> Client<'static> {
        Client {
            ip: Some(ip.parse().unwrap()),
            user_agent: ua.as_bytes(),
        }
    }

    #[test]
    fn a_cookie_checks_out_for_its_network_and_browser_only() {
        let keys = keys(&["k".repeat(32).as_str()]);
        let me = client("192.0.2.10", "Firefox");
        let cookie = keys.cookie(NOW + 60, &me);
        assert_eq!(keys.check_cookie(cookie.as_bytes(), NOW, &me), Ok(()));
        // Same /24: the same network.
        let neighbour = client("192.0.2.200", "Firefox");
        assert_eq!(
            keys.check_cookie(cookie.as_bytes(), NOW, &neighbour),
            Ok(())
        );
        for other in [
            client("192.0.3.10", "Firefox"),
            client("192.0.2.10", "curl"),
        ] {
            assert_eq!(
                keys.check_cookie(cookie.as_bytes(), NOW, &other),
                Err(Refused::BadSignature)
            );
        }
        // IPv6: the /64.
        let v6 = client("2001:db8:1:2::1", "Firefox");
        let cookie = keys.cookie(NOW + 60, &v6);
        let same_64 = client("2001:db8:1:2:ffff::9", "Firefox");
        let other_64 = client("2001:db8:1:3::1", "Firefox");
        assert!(keys.check_cookie(cookie.as_bytes(), NOW, &same_64).is_ok());
        assert!(keys
            .check_cookie(cookie.as_bytes(), NOW, &other_64)
            .is_err());
    }

    #[test]
    fn expired_tampered_and_malformed_cookies_are_refused() {
        let keys = keys(&["k".repeat(32).as_str()]);
        let me = client("192.0.2.10", "Firefox");
        let cookie = keys.cookie(NOW + 60, &me);
        assert_eq!(
            keys.check_cookie(cookie.as_bytes(), NOW + 60, &me),
            Err(Refused::Expired)
        );
        // Every single-character change is refused (a later expiry written in included).
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..cookie.len() {
            let mut tampered = cookie.clone().into_bytes();
            tampered[i] =
                alphabet[(alphabet.iter().position(|c| *c == tampered[i]).unwrap() + 1) % 64];
            assert!(keys.check_cookie(&tampered, NOW, &me).is_err(), "byte {i}");
        }
        for junk in ["", "x", "%%%", &cookie[1..], &format!("{cookie}A")] {
            assert_eq!(
                keys.check_cookie(junk.as_bytes(), NOW, &me),
                Err(Refused::Malformed),
                "{junk}"
            );
        }
    }

    #[test]
    fn rotation_the_first_key_signs_and_every_key_verifies() {
        let old = "o".repeat(32);
        let new = "n".repeat(32);
        let me = client("192.0.2.10", "Firefox");
        let before = keys(&[&old]).cookie(NOW + 60, &me);
        let rotated = keys(&[&new, &old]);
        assert!(rotated.check_cookie(before.as_bytes(), NOW, &me).is_ok());
        let after = rotated.cookie(NOW + 60, &me);
        assert!(keys(&[&new])
            .check_cookie(after.as_bytes(), NOW, &me)
            .is_ok());
        assert!(keys(&[&old])
            .check_cookie(after.as_bytes(), NOW, &me)
            .is_err());
        // Once the old key is gone, its cookies are refused.
        assert_eq!(
            keys(&[&new]).check_cookie(before.as_bytes(), NOW, &me),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn answers_need_our_challenge_in_time_and_enough_work() {
        let keys = keys(&["k".repeat(32).as_str()]);
        let me = client("192.0.2.10", "Firefox");
        let challenge = keys.challenge(8, NOW + 300, [7; 16], &me);
        let nonce = solve(&challenge, 8);
        assert!(solves(&challenge, &nonce, 8));
        assert_eq!(keys.check_answer(&challenge, &nonce, 8, NOW, &me), Ok(()));
        // A nonce that does not solve it.
        let wrong = (0u64..)
            .map(|n| n.to_string())
            .find(|n| !solves(&challenge, n, 8))
            .unwrap();
        assert_eq!(
            keys.check_answer(&challenge, &wrong, 8, NOW, &me),
            Err(Refused::WrongNonce)
        );
        for junk in ["", "12a", "-1", "123456789012345678901"] {
            assert_eq!(
                keys.check_answer(&challenge, junk, 8, NOW, &me),
                Err(Refused::WrongNonce)
            );
        }
        // Too late, for someone else, or easier than the configured difficulty.
        assert_eq!(
            keys.check_answer(&challenge, &nonce, 8, NOW + 300, &me),
            Err(Refused::Expired)
        );
        let other = client("198.51.100.1", "Firefox");
        assert_eq!(
            keys.check_answer(&challenge, &nonce, 8, NOW, &other),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            keys.check_answer(&challenge, &nonce, 9, NOW, &me),
            Err(Refused::WrongNonce)
        );
        // A challenge rewritten to ask for less work fails its MAC.
        let mut bytes = URL_SAFE_NO_PAD.decode(&challenge).unwrap();
        bytes[1] = 1;
        let easier = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            keys.check_answer(&easier, &solve(&easier, 1), 1, NOW, &me),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            keys.check_answer("not base64!", &nonce, 8, NOW, &me),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn leading_zero_bits_read_big_endian() {
        assert_eq!(leading_zero_bits(&[0, 0x0f, 0xff]), 12);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }
}
