//! `/admin/bans`: list, add and lift bans through the admin listener.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::AdminAction;
use crate::ban::{ban_key, now_secs, BanTable};

/// Default length of a ban added through the admin listener.
const DEFAULT_ADMIN_BAN: Duration = Duration::from_secs(3600);

/// The admin action behind `/admin/bans` (the admin listener checks the bearer token
/// first):
///
/// | request | answer |
/// |---|---|
/// | `GET /admin/bans` | `{"bans":[{"ip":"192.0.2.7","rule":"errors","until":1764750000,"expires_in":3541}]}` |
/// | `POST /admin/bans?ip=IP[&duration=1h]` | bans `IP` (IPv6: its /64) under the rule `admin`; `{"banned":"IP","until":...}` |
/// | `DELETE /admin/bans?ip=IP` | lifts the ban; `{"lifted":true}` (`false`: none was held) |
pub struct BansAction {
    bans: Arc<BanTable>,
    rule: Arc<str>,
}

impl BansAction {
    /// The action over `bans`.
    pub fn new(bans: Arc<BanTable>) -> Self {
        Self {
            bans,
            rule: Arc::from("admin"),
        }
    }

    fn list(&self) -> String {
        let now = now_secs();
        let bans: Vec<_> = self
            .bans
            .list()
            .into_iter()
            .map(|ban| {
                serde_json::json!({
                    "ip": ban.ip.to_string(),
                    "rule": ban.rule.as_ref(),
                    "until": ban.until,
                    "expires_in": ban.until.saturating_sub(now),
                })
            })
            .collect();
        format!("{}\n", serde_json::json!({ "bans": bans }))
    }
}

/// `ip` and `duration` from a query string, or why they are wrong.
fn parse_query(query: &str) -> Result<(IpAddr, Option<Duration>), String> {
    let (mut ip, mut duration) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match name {
            "ip" => {
                let parsed = value
                    .parse::<IpAddr>()
                    .map_err(|_| format!("`{value}` is not an IP address\n"))?;
                ip = Some(parsed);
            }
            "duration" => {
                let parsed = crate::config::units::parse_duration(&value)
                    .map_err(|e| format!("duration: {e}\n"))?;
                if parsed.is_zero() {
                    return Err("duration must be longer than 0s\n".into());
                }
                duration = Some(parsed);
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: use ip=IP and duration=1h\n"
                ))
            }
        }
    }
    Ok((ip.ok_or("missing ip=IP\n")?, duration))
}

#[async_trait::async_trait]
impl AdminAction for BansAction {
    async fn run(
        &self,
        session: &mut pingora::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        let request = session.req_header();
        let query = request.uri.query().unwrap_or("");
        let (status, body) = match request.method {
            http::Method::GET => (http::StatusCode::OK, self.list()),
            http::Method::POST => match parse_query(query) {
                Ok((ip, duration)) => {
                    let duration = duration.unwrap_or(DEFAULT_ADMIN_BAN);
                    let ban = self.bans.ban(ip, duration, &self.rule);
                    tracing::info!(client = %ban.ip, until = ban.until, "client banned (admin)");
                    let body =
                        serde_json::json!({ "banned": ban.ip.to_string(), "until": ban.until });
                    (http::StatusCode::OK, format!("{body}\n"))
                }
                Err(why) => (http::StatusCode::BAD_REQUEST, why),
            },
            http::Method::DELETE => match parse_query(query) {
                Ok((ip, _)) => {
                    let lifted = self.bans.lift(ip);
                    if lifted {
                        tracing::info!(client = %ban_key(ip), "ban lifted (admin)");
                    }
                    let body = serde_json::json!({ "lifted": lifted });
                    (http::StatusCode::OK, format!("{body}\n"))
                }
                Err(why) => (http::StatusCode::BAD_REQUEST, why),
            },
            _ => (
                http::StatusCode::METHOD_NOT_ALLOWED,
                "use GET, POST or DELETE\n".to_string(),
            ),
        };
        let length = http::HeaderValue::from(body.len());
        let mut response = http::Response::new(body.into_bytes());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::CONTENT_LENGTH, length);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(parse_query("ip=192.0.2.1"), Ok((ip, None)));
        assert_eq!(
            parse_query("ip=192.0.2.1&duration=10m"),
            Ok((ip, Some(Duration::from_secs(600))))
        );
        assert!(parse_query("").is_err());
        assert!(parse_query("ip=nope").is_err());
        assert!(parse_query("ip=192.0.2.1&duration=0s").is_err());
        assert!(parse_query("ip=192.0.2.1&for=1h").is_err());
    }
}
