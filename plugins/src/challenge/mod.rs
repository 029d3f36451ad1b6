//! `challenge`: a proof-of-work challenge in front of expensive paths (a forge's commits,
//! blame, archives, search), so that crawlers pay in CPU for what they take, and browsers
//! pass once and then carry a signed clearance cookie.
//!
//! ```toml
//! [[sites.forge.locations]]
//! match = "~ ^/[^/]+/[^/]+/(commits|blame|archive|search)"
//! proxy = "forge"
//! plugins = [{ use = "challenge", keys_env = ["CHALLENGE_KEY", "CHALLENGE_KEY_OLD"], difficulty = 16 }]
//! ```
//!
//! A request without a valid clearance cookie gets a small HTML page (no external assets)
//! whose script finds a nonce such that `SHA-256(challenge + nonce)` starts with
//! `difficulty` zero bits and sends it back (`POST` to the same URL with the
//! `X-Edge-Challenge` and `X-Edge-Nonce` headers); a right answer gets the cookie
//! (`Secure; HttpOnly; SameSite=Lax`) and the page loads the original URL again. Challenge
//! and cookie are signed (see [`token`]), so nothing is stored and any process with the
//! keys checks them. Wrong, expired, foreign and tampered values are refused and counted in
//! `edge_plugin_events_total{plugin="challenge"}`.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `keys_env` | required | environment variables holding the secret keys (at least 32 bytes each): the first signs, all verify (rotation); a later one may be unset |
//! | `difficulty` | `16` | leading zero bits (1-32); each bit doubles the work |
//! | `valid` | `"24h"` | how long a clearance cookie lasts |
//! | `solve_within` | `"5m"` | how long a challenge may be answered |
//! | `cookie` | `"edge_clearance"` | the cookie's name |
//! | `status` | `403` | status of the challenge page |
//! | `title`, `text`, `noscript_text` | English | what the page says; `noscript_text` is for clients without JavaScript |
//! | `allow` | none | IPs/CIDRs never challenged |
//! | `allow_files` | none | files of IPs/CIDRs never challenged (e.g. published search-engine ranges), re-read when they change |
//! | `user_agents` | none | case-insensitive regexes; matching `User-Agent`s are not challenged (git's smart HTTP, feed readers) |
//! | `paths` | `["/robots.txt", "/.well-known/"]` | path prefixes never challenged |

pub mod page;
pub mod token;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use proxy_core::plugin::{
    IpListFile, Plugin, PluginCtx, PluginError, PluginOptions, PluginSetup, RequestFlow,
};
use proxy_core::LocalAnswer;
use regex::bytes::RegexSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use page::{PageText, CHALLENGE_HEADER, NONCE_HEADER};
use token::{Client, Keys};

/// The plugin's name in config and in its metric label.
pub const NAME: &str = "challenge";

const DEFAULT_DIFFICULTY: u8 = 16;
const DEFAULT_VALID: &str = "24h";
const DEFAULT_SOLVE_WITHIN: &str = "5m";
const DEFAULT_COOKIE: &str = "edge_clearance";
const DEFAULT_STATUS: u16 = 403;
const DEFAULT_PATHS: [&str; 2] = ["/robots.txt", "/.well-known/"];
const DEFAULT_TITLE: &str = "Checking your browser";
const DEFAULT_TEXT: &str = "This site asks your browser to do a little work before it shows \
pages that are expensive to make, so that crawlers cannot take them all. It takes a moment \
and happens once a day.";
const DEFAULT_NOSCRIPT: &str = "This check needs JavaScript, which your browser does not run. \
Enable it for this site and reload the page. Tools such as git and feed readers are let \
through without this check; if yours is not, ask the site's operator.";

/// The compiled `challenge` plugin.
pub struct Challenge {
    keys: Keys,
    difficulty: u8,
    valid: Duration,
    solve_within: Duration,
    cookie: String,
    status: u16,
    text: PageText,
    allow: Vec<ipnet::IpNet>,
    allow_files: Vec<IpListFile>,
    user_agents: Option<RegexSet>,
    paths: Vec<String>,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("keys", &self.keys)
            .field("difficulty", &self.difficulty)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

/// What the cookie check found.
#[derive(Debug, PartialEq, Eq)]
enum Clearance {
    Valid,
    Missing,
    Refused(token::Refused),
}

impl Challenge {
    /// Builds the plugin from its config options.
    pub fn from_options(
        options: &PluginOptions,
        setup: PluginSetup<'_>,
    ) -> Result<Arc<dyn Plugin>, PluginError> {
        Self::parse_options(options, setup, |name| std::env::var_os(name))
            .map(|plugin| Arc::new(plugin) as Arc<dyn Plugin>)
            .map_err(PluginError::Options)
    }

    /// Builds the plugin, reading environment variables through `env`.
    pub fn parse_options(
        options: &PluginOptions,
        setup: PluginSetup<'_>,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, String> {
        let keys = options.get("keys_env").ok_or(
            "plugin `challenge` needs `keys_env`, the environment variables holding its secret keys",
        )?;
        let mut plugin = Challenge {
            keys: read_keys(&strings("keys_env", keys)?, &env)?,
            difficulty: DEFAULT_DIFFICULTY,
            valid: duration("valid", DEFAULT_VALID)?,
            solve_within: duration("solve_within", DEFAULT_SOLVE_WITHIN)?,
            cookie: DEFAULT_COOKIE.into(),
            status: DEFAULT_STATUS,
            text: PageText {
                title: DEFAULT_TITLE.into(),
                text: DEFAULT_TEXT.into(),
                noscript: DEFAULT_NOSCRIPT.into(),
            },
            allow: Vec::new(),
            allow_files: Vec::new(),
            user_agents: None,
            paths: DEFAULT_PATHS.iter().map(|p| p.to_string()).collect(),
        };
        for (key, value) in options {
            match key.as_str() {
                "keys_env" => {}
                "difficulty" => {
                    plugin.difficulty = value
                        .as_integer()
                        .and_then(|n| u8::try_from(n).ok())
                        .filter(|n| (1..=32).contains(n))
                        .ok_or("`difficulty` must be a number of bits from 1 to 32 (16 takes a phone about a second)")?
                }
                "valid" => plugin.valid = duration(key, text(key, value)?)?,
                "solve_within" => plugin.solve_within = duration(key, text(key, value)?)?,
                "cookie" => plugin.cookie = cookie_name(text(key, value)?)?,
                "status" => {
                    plugin.status = value
                        .as_integer()
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| (200..=599).contains(n))
                        .ok_or("`status` must be an HTTP status from 200 to 599")?
                }
                "title" => plugin.text.title = text(key, value)?.into(),
                "text" => plugin.text.text = text(key, value)?.into(),
                "noscript_text" => plugin.text.noscript = text(key, value)?.into(),
                "allow" => {
                    for net in strings(key, value)? {
                        plugin.allow.push(parse_net(&net).ok_or_else(|| {
                            format!("`allow`: `{net}` is not an IP address or CIDR")
                        })?);
                    }
                }
                "allow_files" => {
                    for path in strings(key, value)? {
                        plugin.allow_files.push(setup.ip_list_file(&path));
                    }
                }
                "user_agents" => {
                    let patterns = strings(key, value)?;
                    let set = regex::bytes::RegexSetBuilder::new(&patterns)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| format!("`user_agents`: {e}"))?;
                    plugin.user_agents = Some(set);
                }
                "paths" => {
                    let paths = strings(key, value)?;
                    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                        return Err(format!("`paths`: `{bad}` must start with '/'"));
                    }
                    plugin.paths = paths;
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}` for plugin `challenge` (known: keys_env, difficulty, valid, solve_within, cookie, status, title, text, noscript_text, allow, allow_files, user_agents, paths)"
                    ))
                }
            }
        }
        Ok(plugin)
    }

    /// Whether the request is let through unchallenged: an allowed address, an exempt
    /// user agent or path.
    fn is_exempt(&self, request: &RequestHeader, ip: Option<IpAddr>) -> bool {
        let path = request.uri.path();
        if self.paths.iter().any(|p| path.starts_with(p.as_str())) {
            return true;
        }
        if let Some(ip) = ip.map(|ip| ip.to_canonical()) {
            if self.allow.iter().any(|net| net.contains(&ip))
                || self.allow_files.iter().any(|list| list.contains(ip))
            {
                return true;
            }
        }
        self.user_agents.as_ref().is_some_and(|set| {
            let agents = request.headers.get_all(http::header::USER_AGENT);
            // Every User-Agent line must match: a second one must not smuggle a crawler in.
            let mut agents = agents.iter().peekable();
            agents.peek().is_some() && agents.all(|v| set.is_match(v.as_bytes()))
        })
    }

    /// The clearance cookie's verdict: valid if any cookie of our name checks out.
    fn clearance(&self, request: &RequestHeader, client: &Client<'_>, now: u64) -> Clearance {
        let mut verdict = Clearance::Missing;
        for header in request.headers.get_all(http::header::COOKIE) {
            for pair in header.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii_start();
                let Some(value) = pair
                    .strip_prefix(self.cookie.as_bytes())
                    .and_then(|rest| rest.strip_prefix(b"="))
                else {
                    continue;
                };
                match self.keys.check_cookie(value.trim_ascii_end(), now, client) {
                    Ok(()) => return Clearance::Valid,
                    Err(why) => verdict = Clearance::Refused(why),
                }
            }
        }
        verdict
    }

    /// The challenge page for `client`.
    fn challenge_page(&self, client: &Client<'_>, now: u64) -> LocalAnswer {
        let expires = now.saturating_add(self.solve_within.as_secs());
        let random = uuid::Uuid::new_v4().into_bytes();
        let challenge = self
            .keys
            .challenge(self.difficulty, expires, random, client);
        let mut answer = LocalAnswer::html(
            self.status,
            page::render(&self.text, &challenge, self.difficulty),
        );
        answer.headers.push((
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
        answer
    }

    /// The answer to a solution: the clearance cookie, or a refusal.
    fn check_solution(
        &self,
        request: &RequestHeader,
        client: &Client<'_>,
        now: u64,
        ctx: &PluginCtx<'_>,
    ) -> LocalAnswer {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let (challenge, nonce) = (header(CHALLENGE_HEADER), header(NONCE_HEADER));
        if request.method != http::Method::POST {
            ctx.count(NAME, "challenge_invalid");
            return LocalAnswer::text(405, "answer a challenge with POST\n");
        }
        match self
            .keys
            .check_answer(challenge, nonce, self.difficulty, now, client)
        {
            Ok(()) => {
                ctx.count(NAME, "solved");
                let expires = now.saturating_add(self.valid.as_secs());
                let cookie = format!(
                    "{}={}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
                    self.cookie,
                    self.keys.cookie(expires, client),
                    self.valid.as_secs()
                );
                let mut answer = LocalAnswer::text(204, "");
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    answer.headers.push((http::header::SET_COOKIE, value));
                }
                answer.headers.push((
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                ));
                answer
            }
            Err(why) => {
                ctx.count(NAME, why.answer_event());
                LocalAnswer::text(403, "wrong answer to the challenge\n")
            }
        }
    }
}

#[async_trait]
impl Plugin for Challenge {
    async fn request(
        &self,
        session: &mut Session,
        ctx: PluginCtx<'_>,
    ) -> pingora::Result<RequestFlow> {
        let request = session.req_header();
        let ip = ctx.client_ip();
        let client = Client {
            ip,
            user_agent: request
                .headers
                .get(http::header::USER_AGENT)
                .map_or(&[][..], |v| v.as_bytes()),
        };
        let now = unix_now();
        if request.headers.contains_key(CHALLENGE_HEADER) {
            return Ok(RequestFlow::Answer(
                self.check_solution(request, &client, now, &ctx),
            ));
        }
        if self.is_exempt(request, ip) {
            return Ok(RequestFlow::Continue);
        }
        match self.clearance(request, &client, now) {
            Clearance::Valid => return Ok(RequestFlow::Continue),
            Clearance::Missing => {}
            Clearance::Refused(why) => ctx.count(NAME, why.cookie_event()),
        }
        ctx.count(NAME, "issued");
        Ok(RequestFlow::Answer(self.challenge_page(&client, now)))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_keys(
    names: &[String],
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Keys, String> {
    let Some(signing) = names.first() else {
        return Err("`keys_env` must name at least one environment variable".into());
    };
    let mut secrets = Vec::new();
    for name in names {
        let secret = env(name).map(std::ffi::OsString::into_encoded_bytes);
        match secret {
            Some(secret) if secret.len() >= token::MIN_KEY_LEN => secrets.push(secret),
            Some(_) => {
                return Err(format!(
                    "`keys_env`: `{name}` holds fewer than {} bytes; use e.g. `openssl rand -base64 48`",
                    token::MIN_KEY_LEN
                ))
            }
            // Only the signing key is required: an older one may be unset once retired.
            None if name == signing => {
                return Err(format!(
                    "`keys_env`: the environment variable `{name}` (the signing key) is not set"
                ))
            }
            None => {}
        }
    }
    Keys::new(secrets.iter().map(Vec::as_slice)).ok_or_else(|| "`keys_env`: no usable key".into())
}

fn text<'v>(key: &str, value: &'v toml::Value) -> Result<&'v str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("`{key}` must be a string"))
}

/// A list of strings (a single string counts as a list of one).
fn strings(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    if let Some(one) = value.as_str() {
        return Ok(vec![one.to_string()]);
    }
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| format!("`{key}` must be a list of strings"))
}

fn duration(key: &str, text: &str) -> Result<Duration, String> {
    match proxy_core::config::units::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("`{key}` must be longer than 0s")),
        Err(e) => Err(format!("`{key}`: {e}")),
    }
}

fn cookie_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`cookie`: `{name}` is not a cookie name (letters, digits, '_' and '-')"
        ))
    }
}

fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(options: &str, env: &[(&str, &str)]) -> Result<Challenge, String> {
        let options: toml::Table = options.parse().map_err(|e| format!("{e}"))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Challenge::parse_options(
            &options,
            PluginSetup::new(std::path::Path::new(".")),
            |name| {
                env.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone().into())
            },
        )
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn options_are_checked() {
        assert!(build("keys_env = [\"K\"]", &[("K", KEY)]).is_ok());
        let err =
            |options: &str, env: &[(&str, &str)]| build(options, env).err().unwrap_or_default();
        assert!(err("difficulty = 8", &[]).contains("needs `keys_env`"));
        assert!(err("keys_env = [\"K\"]", &[]).contains("`K` (the signing key) is not set"));
        assert!(err("keys_env = [\"K\"]", &[("K", "short")]).contains("fewer than 32 bytes"));
        // A retired key may be unset.
        assert!(build("keys_env = [\"K\", \"OLD\"]", &[("K", KEY)]).is_ok());
        assert!(err("keys_env = [\"K\"]\ndifficulty = 40", &[("K", KEY)]).contains("`difficulty`"));
        assert!(err("keys_env = [\"K\"]\nvalid = \"soon\"", &[("K", KEY)]).contains("`valid`"));
        assert!(err("keys_env = [\"K\"]\ncookie = \"a b\"", &[("K", KEY)]).contains("`cookie`"));
        assert!(err("keys_env = [\"K\"]\nallow = [\"x\"]", &[("K", KEY)]).contains("`allow`"));
        assert!(
            err("keys_env = [\"K\"]\nuser_agents = [\"(\"]", &[("K", KEY)])
                .contains("`user_agents`")
        );
        assert!(err("keys_env = [\"K\"]\npaths = [\"x\"]", &[("K", KEY)]).contains("`paths`"));
        assert!(err("keys_env = [\"K\"]\ncolour = 1", &[("K", KEY)])
            .contains("unknown option `colour`"));
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn exemptions_by_path_address_and_every_user_agent_line() {
        let plugin = build(
            "keys_env = \"K\"\nallow = [\"198.51.100.0/24\"]\nuser_agents = [\"^git/\"]",
            &[("K", KEY)],
        )
        .unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let browser = [("user-agent", "Mozilla/5.0")];
        assert!(plugin.is_exempt(&request("/robots.txt", &browser), ip("192.0.2.1")));
        assert!(plugin.is_exempt(&request("/.well-known/x", &browser), ip("192.0.2.1")));
        assert!(plugin.is_exempt(&request("/a", &browser), ip("198.51.100.9")));
        assert!(!plugin.is_exempt(&request("/a", &browser), ip("192.0.2.1")));
        let git = [("user-agent", "git/2.39.2")];
        assert!(plugin.is_exempt(&request("/a", &git), ip("192.0.2.1")));
        let smuggled = [("user-agent", "git/2.39.2"), ("user-agent", "GPTBot")];
        assert!(!plugin.is_exempt(&request("/a", &smuggled), ip("192.0.2.1")));
        assert!(!plugin.is_exempt(&request("/a", &[]), ip("192.0.2.1")));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_checked() {
        let plugin = build("keys_env = \"K\"", &[("K", KEY)]).unwrap();
        let client = Client {
            ip: Some("192.0.2.1".parse().unwrap()),
            user_agent: b"Mozilla/5.0",
        };
        let now = 1_800_000_000;
        let value = plugin.keys.cookie(now + 60, &client);
        let cookie = format!("a=1; edge_clearance={value}; b=2");
        let with = request("/", &[("cookie", &cookie), ("user-agent", "Mozilla/5.0")]);
        assert_eq!(plugin.clearance(&with, &client, now), Clearance::Valid);
        let without = request("/", &[("cookie", "a=1")]);
        assert_eq!(plugin.clearance(&without, &client, now), Clearance::Missing);
        let forged = request("/", &[("cookie", "edge_clearance=AAAA")]);
        assert!(matches!(
            plugin.clearance(&forged, &client, now),
            Clearance::Refused(_)
        ));
        // A second, valid cookie of the name still passes.
        let two = format!("edge_clearance=AAAA; edge_clearance={value}");
        let two = request("/", &[("cookie", &two)]);
        assert_eq!(plugin.clearance(&two, &client, now), Clearance::Valid);
    }
}
