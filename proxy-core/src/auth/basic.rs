//! [`BasicAuth`]: `Authorization: Basic` checked against an htpasswd file.
//!
//! Hash checks are slow by design (bcrypt, argon2), so they run on Tokio's blocking pool,
//! never on the event loop; and a password verified once is remembered (as a SHA-256 of
//! user, password and stored hash, never the password itself) so a logged-in browser is
//! not verified again on every request. A changed or removed user's hash changes the key,
//! so what was remembered no longer matches.

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;

use super::htpasswd::{HtpasswdFile, StoredHash};
use super::AuthVerdict;

/// Passwords remembered as verified per location at most; past it the set starts over.
const VERIFIED_CAPACITY: usize = 4096;

/// Basic auth of one location.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    users: Arc<HtpasswdFile>,
    /// `Basic realm="...", charset="UTF-8"`.
    challenge: HeaderValue,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    /// Basic auth against `users`, asking for credentials of `realm`; the realm must not
    /// hold `"`, `\` or control characters (checked when the config compiles).
    pub(crate) fn new(users: Arc<HtpasswdFile>, realm: &str) -> Result<Self, String> {
        if let Some(bad) = realm
            .chars()
            .find(|c| matches!(c, '"' | '\\') || c.is_control())
        {
            return Err(format!(
                "the realm may not contain {bad:?} (it is quoted in `WWW-Authenticate`)"
            ));
        }
        if realm.trim().is_empty() {
            return Err("the realm must not be empty: browsers show it in the login prompt".into());
        }
        let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
        Ok(Self {
            users,
            challenge: HeaderValue::from_bytes(challenge.as_bytes())
                .map_err(|_| "the realm cannot be sent in a header".to_string())?,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Checks the request's credentials: the user on success, else a 401 asking for them.
    pub(crate) async fn check(&self, headers: &HeaderMap) -> AuthVerdict {
        let Some((user, password)) = credentials(headers) else {
            return AuthVerdict::Deny(self.refusal());
        };
        let users = self.users.users();
        let (hash, known) = match users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => match users.decoy() {
                Some(decoy) => (decoy.clone(), false),
                None => return AuthVerdict::Deny(self.refusal()),
            },
        };
        let key = remembered_key(&user, &password, &hash);
        if known && self.verified.lock().contains(&key) {
            return AuthVerdict::allow(user);
        }
        // An unknown user pays for a real verification too: no user names by timing.
        let verified = tokio::task::spawn_blocking(move || hash.verify(&password)).await;
        match verified {
            Ok(true) if known => {
                let mut remembered = self.verified.lock();
                if remembered.len() >= VERIFIED_CAPACITY {
                    remembered.clear();
                }
                remembered.insert(key);
                AuthVerdict::allow(user)
            }
            Ok(_) => AuthVerdict::Deny(self.refusal()),
            Err(e) => AuthVerdict::error(format!("password check failed: {e}")),
        }
    }

    fn refusal(&self) -> crate::LocalAnswer {
        let mut answer = crate::LocalAnswer::text(401, "authentication required\n");
        answer
            .headers
            .push((http::header::WWW_AUTHENTICATE, self.challenge.clone()));
        answer
    }
}

/// User and password of `Authorization: Basic ...`, if the request has one that decodes.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

/// What a verified password is remembered as.
fn remembered_key(user: &str, password: &[u8], hash: &StoredHash) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [user.as_bytes(), password, hash.as_str().as_bytes()] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn reads_basic_credentials_and_nothing_else() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("al:ice:pa:ss");
        let (user, password) = credentials(&header(&format!("basic {encoded}"))).unwrap();
        assert_eq!(
            (user.as_str(), password.as_slice()),
            ("al", &b"ice:pa:ss"[..])
        );
        assert!(credentials(&header("Bearer abc")).is_none());
        assert!(credentials(&header("Basic !!!")).is_none());
        assert!(credentials(&header("Basic")).is_none());
        assert!(credentials(&HeaderMap::new()).is_none());
    }

    #[test]
    fn realms_that_cannot_be_quoted_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "").unwrap();
        let file = Arc::new(HtpasswdFile::load(path).unwrap());
        assert!(BasicAuth::new(file.clone(), "Photos").is_ok());
        assert!(BasicAuth::new(file.clone(), "Ph\"otos").is_err());
        assert!(BasicAuth::new(file.clone(), "a\\b").is_err());
        assert!(BasicAuth::new(file.clone(), " ").is_err());
        assert!(BasicAuth::new(file, "Fotos für Oma").is_ok());
    }
}
