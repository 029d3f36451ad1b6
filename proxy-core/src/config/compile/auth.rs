//! `auth = { }` on sites and locations: the htpasswd file read (and kept for the running
//! edge to re-read), the realm checked.

use std::sync::Arc;

use super::Compiler;
use crate::auth::{
    AuthMethod, BasicAuth, DecisionCache, DecisionKey, ForwardAuth, HtpasswdFile, KeyPart,
    LocationAuth,
};
use crate::config::error::KeyPath;
use crate::config::file::{
    AuthSection, BasicAuthSection, ForwardAuthSection, DEFAULT_FORWARD_AUTH_CACHE,
    DEFAULT_FORWARD_AUTH_CACHE_SIZE, DEFAULT_FORWARD_AUTH_TIMEOUT, DEFAULT_KEEP_AUTHORIZATION,
};

impl Compiler<'_> {
    /// A site's or location's authentication; `None` when it has no method (none at all, or
    /// `auth = {}` turning the site's off) or a problem was reported.
    pub(super) fn edge_auth(
        &mut self,
        section: &AuthSection,
        key: &KeyPath,
    ) -> Option<Arc<LocationAuth>> {
        let keep_authorization = section
            .keep_authorization
            .unwrap_or(DEFAULT_KEEP_AUTHORIZATION);
        let method = match (&section.basic, &section.forward) {
            (Some(_), Some(_)) => {
                self.problem(
                    key.clone(),
                    "`auth` takes one method: `basic = { }` or `forward = { }`, not both",
                );
                return None;
            }
            (Some(basic), None) => AuthMethod::Basic(self.basic_auth(basic, &key.key("basic"))?),
            (None, Some(forward)) => {
                let forward = Arc::new(self.forward_auth(forward, &key.key("forward"))?);
                self.forward_auths.push(forward.clone());
                AuthMethod::Forward(forward)
            }
            (None, None) => {
                if section.keep_authorization.is_some() {
                    self.problem(
                        key.key("keep_authorization"),
                        "`keep_authorization` needs an authentication method: `basic = { }` or `forward = { }`",
                    );
                }
                return None;
            }
        };
        Some(Arc::new(LocationAuth::new(method, keep_authorization)))
    }

    fn basic_auth(&mut self, section: &BasicAuthSection, key: &KeyPath) -> Option<BasicAuth> {
        let users = self.htpasswd_file(&section.htpasswd, key.key("htpasswd"));
        let basic = BasicAuth::new(users?, &section.realm)
            .map_err(|e| self.problem(key.key("realm"), e))
            .ok()?;
        Some(basic)
    }

    fn forward_auth(&mut self, s: &ForwardAuthSection, key: &KeyPath) -> Option<ForwardAuth> {
        let url = match reqwest::Url::parse(&s.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(_) => {
                self.problem(
                    key.key("url"),
                    format!(
                        "`{}`: the auth service's URL must be http:// or https:// with a host",
                        s.url
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(key.key("url"), format!("`{}`: {e}", s.url));
                None
            }
        };
        let copy_headers = self.header_names(&s.copy_headers, &key.key("copy_headers"));
        let user_header = s
            .user_header
            .as_deref()
            .and_then(|name| self.header_name(name, key.key("user_header")));
        let timeout = self.positive_duration(
            s.timeout.as_deref(),
            DEFAULT_FORWARD_AUTH_TIMEOUT,
            key.key("timeout"),
        );
        let cache = self.decision_cache(s, key);
        ForwardAuth::new(url?, timeout, copy_headers, user_header, cache)
            .map_err(|e| self.problem(key.clone(), e))
            .ok()
    }

    /// The remembered answers of a forward-auth location, if `cache` is longer than 0s.
    fn decision_cache(
        &mut self,
        s: &ForwardAuthSection,
        key: &KeyPath,
    ) -> Option<(DecisionCache, DecisionKey)> {
        let ttl = self.duration(
            s.cache.as_deref(),
            DEFAULT_FORWARD_AUTH_CACHE,
            key.key("cache"),
        );
        let parts: Vec<KeyPart> = s
            .cache_key
            .iter()
            .enumerate()
            .filter_map(|(i, part)| {
                KeyPart::parse(part)
                    .map_err(|e| self.problem(key.key("cache_key").index(i), e))
                    .ok()
            })
            .collect();
        let size = s.cache_size.unwrap_or(DEFAULT_FORWARD_AUTH_CACHE_SIZE);
        if ttl.is_zero() {
            if !s.cache_key.is_empty() {
                self.problem(
                    key.key("cache_key"),
                    "`cache_key` has no effect without `cache`, how long answers are remembered",
                );
            }
            return None;
        }
        if s.cache_key.is_empty() {
            self.problem(key.key("cache_key"), "`cache` needs `cache_key`, what answers are remembered by (e.g. [\"cookie:session\"]): one answer for every client would let anyone in");
            return None;
        }
        if size == 0 {
            self.problem(key.key("cache_size"), "must be at least 1");
            return None;
        }
        Some((DecisionCache::new(ttl, size), DecisionKey::new(parts)))
    }

    /// The htpasswd file at `relative`, read once however many locations use it.
    fn htpasswd_file(&mut self, relative: &str, key: KeyPath) -> Option<Arc<HtpasswdFile>> {
        let path = self.path(relative);
        if let Some(file) = self.htpasswd_files.iter().find(|f| f.path() == path) {
            return Some(file.clone());
        }
        let file = HtpasswdFile::load(path)
            .map_err(|e| self.problem(key, e.to_string()))
            .ok()?;
        let file = Arc::new(file);
        self.htpasswd_files.push(file.clone());
        Some(file)
    }
}

#[cfg(test)]
mod tests {

    fn check(dir: &std::path::Path, auth: &str) -> Result<(), String> {
        let text = format!(
            r#"
[upstreams.app]
address = "127.0.0.1:9"

[sites.docs]
hosts = ["docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "app"
auth = {auth}
"#
        );
        let path = dir.join("edge.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::load_file(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reports_bad_htpasswd_files_and_realms_at_the_auth_key() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(dir.path().join("good"), format!("alice:{hash}\n")).unwrap();
        std::fs::write(
            dir.path().join("md5"),
            "# x\nbob:$apr1$abcdefgh$0123456789abcdefghijkl\n",
        )
        .unwrap();
        assert_eq!(
            check(
                dir.path(),
                r#"{ basic = { htpasswd = "good", realm = "Docs" } }"#
            ),
            Ok(())
        );

        let e = check(
            dir.path(),
            r#"{ basic = { htpasswd = "md5", realm = "Docs" } }"#,
        )
        .unwrap_err();
        assert!(
            e.contains("sites.docs.locations[0].auth.basic.htpasswd"),
            "{e}"
        );
        assert!(e.contains("md5` line 2: user `bob`: MD5"), "{e}");
        assert!(
            !e.contains("$apr1$abcdefgh"),
            "the hash is never shown: {e}"
        );

        let e = check(
            dir.path(),
            r#"{ basic = { htpasswd = "missing", realm = "Docs" } }"#,
        )
        .unwrap_err();
        assert!(
            e.contains("auth.basic.htpasswd") && e.contains("cannot read"),
            "{e}"
        );

        let e = check(
            dir.path(),
            r#"{ basic = { htpasswd = "good", realm = "a\"b" } }"#,
        )
        .unwrap_err();
        assert!(e.contains("auth.basic.realm"), "{e}");

        let e = check(dir.path(), r#"{ basic = { htpasswd = "good" } }"#).unwrap_err();
        assert!(e.contains("realm"), "{e}");

        let e = check(dir.path(), r#"{ keep_authorization = true }"#).unwrap_err();
        assert!(e.contains("auth.keep_authorization"), "{e}");
    }

    #[test]
    fn reports_bad_forward_auth_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ok = r#"{ forward = { url = "http://auth.example.ts.net:9091/verify", copy_headers = ["X-User"], cache = "30s", cache_key = ["cookie:session", "header:x-tenant"] } }"#;
        assert_eq!(check(dir.path(), ok), Ok(()));
        for (auth, key, words) in [
            (
                r#"{ forward = { url = "ftp://auth/verify" } }"#,
                "auth.forward.url",
                "http://",
            ),
            (
                r#"{ forward = { url = "not a url" } }"#,
                "auth.forward.url",
                "relative URL",
            ),
            (
                r#"{ forward = { url = "http://a/", copy_headers = ["bad header"] } }"#,
                "auth.forward.copy_headers[0]",
                "invalid header name",
            ),
            (
                r#"{ forward = { url = "http://a/", timeout = "0s" } }"#,
                "auth.forward.timeout",
                "longer than 0s",
            ),
            (
                r#"{ forward = { url = "http://a/", cache = "30s" } }"#,
                "auth.forward.cache_key",
                "one answer for every client",
            ),
            (
                r#"{ forward = { url = "http://a/", cache_key = ["cookie:s"] } }"#,
                "auth.forward.cache_key",
                "without `cache`",
            ),
            (
                r#"{ forward = { url = "http://a/", cache = "1m", cache_key = ["query:s"] } }"#,
                "auth.forward.cache_key[0]",
                "cookie:NAME",
            ),
            (
                r#"{ forward = { url = "http://a/", cache = "1m", cache_key = ["cookie:s"], cache_size = 0 } }"#,
                "auth.forward.cache_size",
                "at least 1",
            ),
            (
                r#"{ forward = { url = "http://a/" }, basic = { htpasswd = "x", realm = "x" } }"#,
                "locations[0].auth",
                "not both",
            ),
        ] {
            let e = check(dir.path(), auth).unwrap_err();
            assert!(e.contains(key) && e.contains(words), "{auth}: {e}");
        }
    }
}
