//! [`HtpasswdFile`]: the users of a basic-auth location, read from an Apache htpasswd file
//! (`user:hash` lines) and re-read when the file changes.
//!
//! Only hashes that are slow by design are accepted: bcrypt (`htpasswd -B`) and argon2
//! (`$argon2id$...`). MD5 (`$apr1$`), SHA-1 (`{SHA}`), crypt and plain text are refused
//! when the config is checked, naming the file and line (never the hash). A file that
//! breaks while the proxy runs keeps the users read before, and the error is logged.

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::access::{file_stamp, FileStamp};

/// A stored password hash of a supported kind, checked when the file was read.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoredHash {
    /// `$2a$`, `$2b$`, `$2x$` or `$2y$`.
    Bcrypt(String),
    /// `$argon2id$`, `$argon2i$` or `$argon2d$` (PHC string).
    Argon2(String),
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes stay out of logs and debug output.
        match self {
            StoredHash::Bcrypt(_) => f.write_str("Bcrypt(..)"),
            StoredHash::Argon2(_) => f.write_str("Argon2(..)"),
        }
    }
}

impl StoredHash {
    /// Recognises a hash, or says why it cannot be used.
    fn parse(hash: &str) -> Result<Self, String> {
        const RECREATE: &str = "recreate the user with `htpasswd -B` (bcrypt) or an argon2 hash";
        if ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            return hash
                .parse::<bcrypt::HashParts>()
                .map(|_| StoredHash::Bcrypt(hash.to_string()))
                .map_err(|_| "malformed bcrypt hash".to_string());
        }
        if hash.starts_with("$argon2") {
            return argon2::PasswordHash::new(hash)
                .ok()
                .filter(|parsed| {
                    argon2::Algorithm::new(parsed.algorithm.as_str()).is_ok()
                        && parsed.salt.is_some()
                        && parsed.hash.is_some()
                })
                .map(|_| StoredHash::Argon2(hash.to_string()))
                .ok_or_else(|| "malformed argon2 hash".to_string());
        }
        let kind = if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            "MD5"
        } else if hash.starts_with("{SHA}") {
            "SHA-1"
        } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
            "SHA-crypt"
        } else {
            "crypt or plain-text"
        };
        Err(format!(
            "{kind} password hashes are not supported (too fast to guess against): {RECREATE}"
        ))
    }

    /// Whether `password` matches. Slow by design: call it off the event loop.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        use argon2::PasswordVerifier;
        match self {
            StoredHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            StoredHash::Argon2(hash) => argon2::PasswordHash::new(hash)
                .map(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password, &parsed)
                        .is_ok()
                })
                .unwrap_or(false),
        }
    }

    /// The hash's text (a part of the verified-password cache key).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            StoredHash::Bcrypt(hash) | StoredHash::Argon2(hash) => hash,
        }
    }
}

/// The users of one htpasswd file.
#[derive(Debug, Default)]
pub(crate) struct Users {
    by_name: HashMap<String, StoredHash>,
    /// A user's hash verified in place of an unknown user's, so that an unknown name takes
    /// as long to refuse as a wrong password (no user names revealed by timing).
    decoy: Option<StoredHash>,
}

impl Users {
    /// The stored hash of `user`.
    pub(crate) fn get(&self, user: &str) -> Option<&StoredHash> {
        self.by_name.get(user)
    }

    /// The hash to verify for a user who is not in the file.
    pub(crate) fn decoy(&self) -> Option<&StoredHash> {
        self.decoy.as_ref()
    }

    /// How many users the file has.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// A line of an htpasswd file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub(crate) struct HtpasswdError {
    /// 1-based line number.
    pub(crate) line: usize,
    /// What is wrong, without the hash.
    pub(crate) message: String,
}

/// Parses htpasswd text: `user:hash` lines; blank lines and `#` comments are skipped.
pub(crate) fn parse_htpasswd(text: &str) -> Result<Users, HtpasswdError> {
    let mut users = Users::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| HtpasswdError {
            line: i + 1,
            message,
        };
        let Some((user, hash)) = line.split_once(':') else {
            return Err(error("expected `user:hash`".into()));
        };
        if user.is_empty() {
            return Err(error("empty user name".into()));
        }
        let hash = StoredHash::parse(hash).map_err(|why| error(format!("user `{user}`: {why}")))?;
        if users.by_name.insert(user.to_string(), hash).is_some() {
            return Err(error(format!("user `{user}` appears twice")));
        }
    }
    users.decoy = users
        .by_name
        .iter()
        .min_by(|a, b| a.0.cmp(b.0))
        .map(|(_, hash)| hash.clone());
    Ok(users)
}

/// Why an htpasswd file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HtpasswdFileError {
    #[error("cannot read `{path}`: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("`{path}` {error}")]
    Parse { path: String, error: HtpasswdError },
}

/// An htpasswd file, read when created and re-read by [`HtpasswdFile::refresh`].
#[derive(Debug)]
pub(crate) struct HtpasswdFile {
    path: PathBuf,
    users: ArcSwap<Users>,
    /// What the users were read from.
    stamp: Mutex<FileStamp>,
}

impl HtpasswdFile {
    /// Reads `path`; unlike a deny list, a missing or broken file is an error: a location
    /// nobody can log in to is a mistake to report at config check.
    pub(crate) fn load(path: PathBuf) -> Result<Self, HtpasswdFileError> {
        let stamp = file_stamp(&path);
        let users = read(&path)?;
        Ok(Self {
            path,
            users: ArcSwap::from_pointee(users),
            stamp: Mutex::new(stamp),
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The users as last read.
    pub(crate) fn users(&self) -> Arc<Users> {
        self.users.load_full()
    }

    /// Reads the file again if it changed since it was last read; a file that cannot be
    /// used keeps the users read before (logged). Returns whether new users were loaded.
    pub(crate) fn refresh(&self) -> bool {
        let mut last = self.stamp.lock();
        let now = file_stamp(&self.path);
        if now == *last {
            return false;
        }
        *last = now;
        match read(&self.path) {
            Ok(users) => {
                tracing::info!(path = %self.path.display(), users = users.len(), "htpasswd file loaded");
                self.users.store(Arc::new(users));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "htpasswd file not reloaded; the users read before still apply");
                false
            }
        }
    }
}

fn read(path: &Path) -> Result<Users, HtpasswdFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| HtpasswdFileError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse_htpasswd(&text).map_err(|error| HtpasswdFileError::Parse {
        path: path.display().to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fast_hashes_naming_the_line_but_not_the_hash() {
        for (line, kind) in [
            ("bob:$apr1$abcdefgh$0123456789abcdefghijkl", "MD5"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:abJnggxhB/yWI", "crypt"),
            ("bob:$6$salt$hash", "SHA-crypt"),
        ] {
            let text = format!("# users\n\n{line}\n");
            let e = parse_htpasswd(&text).unwrap_err();
            assert_eq!(e.line, 3, "{line}");
            assert!(e.message.contains(kind), "{}", e.message);
            assert!(e.message.contains("`bob`"), "{}", e.message);
            let hash = line.split_once(':').unwrap().1;
            assert!(!e.to_string().contains(hash), "{e}");
        }
    }

    #[test]
    fn refuses_malformed_lines_and_duplicates() {
        assert!(parse_htpasswd("no-colon")
            .unwrap_err()
            .message
            .contains("user:hash"));
        assert!(parse_htpasswd(":$2y$04$x")
            .unwrap_err()
            .message
            .contains("empty"));
        assert!(parse_htpasswd("a:$2y$04$short")
            .unwrap_err()
            .message
            .contains("malformed bcrypt"));
        assert!(parse_htpasswd("a:$argon2id$nonsense")
            .unwrap_err()
            .message
            .contains("malformed argon2"));
        let alice = format!("alice:{}", bcrypt::hash("secret", 4).unwrap());
        let twice = format!("{alice}\n{alice}\n");
        assert_eq!(parse_htpasswd(&twice).unwrap_err().line, 2);
    }

    #[test]
    fn verifies_bcrypt_and_argon2() {
        let bcrypt_hash = bcrypt::hash("secret", 4).unwrap();
        let argon_hash = {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let params = argon2::Params::new(1024, 1, 1, None).unwrap();
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"hunter2", &salt)
                .unwrap()
                .to_string()
        };
        let users = parse_htpasswd(&format!("a:{bcrypt_hash}\nb:{argon_hash}\n")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.get("a").unwrap().verify(b"secret"));
        assert!(!users.get("a").unwrap().verify(b"Secret"));
        assert!(users.get("b").unwrap().verify(b"hunter2"));
        assert!(!users.get("b").unwrap().verify(b"hunter3"));
        assert!(users.decoy().is_some());
        assert!(!format!("{:?}", users.get("a")).contains("$2"));
    }

    #[test]
    fn a_broken_new_file_keeps_the_old_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&path, format!("a:{hash}\n")).unwrap();
        let file = HtpasswdFile::load(path.clone()).unwrap();
        assert!(!file.refresh(), "nothing changed");
        std::fs::write(&path, format!("a:{hash}\nb:{{SHA}}x\n")).unwrap();
        assert!(!file.refresh());
        assert!(file.users().get("a").is_some());
        std::fs::write(&path, format!("b:{hash}\n")).unwrap();
        assert!(file.refresh());
        assert!(file.users().get("a").is_none());
        assert!(file.users().get("b").is_some());
    }
}
