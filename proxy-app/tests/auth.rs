//! Edge authentication end to end: basic auth against htpasswd files written by Debian's
//! `htpasswd` (apache2-utils; argon2 hashes by the `argon2` crate, which htpasswd cannot
//! write), over real sockets. Right passwords pass and the upstream never sees the
//! credentials (unless the location keeps them); wrong ones, unknown users and requests
//! without credentials get 401 with the realm; a changed file lets new users in without a
//! restart, a broken one keeps the old users; the access log names the user, never the
//! password. Forward auth against an auth service the test runs: allowed requests carry
//! its headers upstream, its refusals reach the client, its failures fail closed, and its
//! answers are remembered by session.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOST: &str = "photos.example.com";
const CHALLENGE: &str = r#"Basic realm="Family photos", charset="UTF-8""#;

fn add_user(file: &Path, user: &str, password: &str, create: bool) {
    let flags = if create { "-Bcb" } else { "-Bb" };
    let status = Command::new("htpasswd")
        .args([flags])
        .arg(file)
        .args([user, password])
        .status()
        .expect("run htpasswd (apache2-utils installed?)");
    assert!(status.success(), "htpasswd {flags} {user}");
}

/// An argon2id line, which `htpasswd` cannot write.
fn argon2_line(user: &str, password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"photos-test-salt").unwrap();
    // Small parameters: the proxy under test is a debug build.
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let hash = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap();
    format!("{user}:{hash}\n")
}

fn config(tailnet: &fake_tailnet::FakeTailnet) -> String {
    format!(
        r#"{base}
[access_log]
path = "access.log"

[upstreams.photos]
address = "photos.{d}:{p}"

[sites.photos]
hosts = ["{HOST}"]
auth = {{ basic = {{ htpasswd = "users.htpasswd", realm = "Family photos" }} }}

[[sites.photos.locations]]
match = "/"
proxy = "photos"

[[sites.photos.locations]]
match = "/webdav/"
proxy = "photos"
auth = {{ basic = {{ htpasswd = "users.htpasswd", realm = "Family photos" }}, keep_authorization = true }}

[[sites.photos.locations]]
match = "/public/"
proxy = "photos"
auth = {{}}
"#,
        base = base_config(tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    )
}

async fn get_as(proxy: &Proxy, path: &str, credentials: Option<(&str, &str)>) -> Reply {
    let mut request = client().get(proxy.url(path)).header("host", HOST);
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    Reply::read(request.send().await.expect("request")).await
}

#[tokio::test]
async fn basic_auth_from_htpasswd_files_reloaded_live_credentials_kept_from_upstream_and_log() {
    let tailnet = tailnet(&["photos"]).await;
    let peer = tailnet.peer("photos").unwrap();
    let made = tempfile::tempdir().unwrap();
    let users = made.path().join("users.htpasswd");
    add_user(&users, "alice", "correct horse", true);
    let mut text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("alice:$2y$"), "htpasswd -B writes bcrypt");
    text.push_str(&argon2_line("bob", "battery staple"));
    let proxy = Proxy::start_with_files(&config(&tailnet), &[("users.htpasswd", text.as_bytes())]);

    // No credentials, a wrong password, an unknown user: 401 with the realm, never upstream.
    for credentials in [
        None,
        Some(("alice", "wrong")),
        Some(("mallory", "correct horse")),
        Some(("bob", "correct horse")),
    ] {
        let refused = get_as(&proxy, "/album", credentials).await;
        assert_eq!(refused.status, 401, "{credentials:?}");
        assert_eq!(refused.header("www-authenticate"), Some(CHALLENGE));
    }
    assert_eq!(peer.requests(), 0);

    // bcrypt and argon2 users get in; the upstream sees no `Authorization`.
    for (user, password) in [("alice", "correct horse"), ("bob", "battery staple")] {
        let ok = get_as(&proxy, "/album", Some((user, password))).await;
        assert_eq!(ok.status, 200, "{user}: {}", ok.body);
        let seen = peer.last_request().unwrap();
        assert_eq!(seen.header("authorization"), None, "{user}");
    }
    // Again (from the verified-password memory): the same answer.
    assert_eq!(
        get_as(&proxy, "/album", Some(("alice", "correct horse")))
            .await
            .status,
        200
    );
    assert_eq!(
        get_as(&proxy, "/album", Some(("alice", "correct hors")))
            .await
            .status,
        401
    );

    // A location that keeps the header forwards it; one with `auth = {}` needs none.
    assert_eq!(
        get_as(&proxy, "/webdav/a", Some(("alice", "correct horse")))
            .await
            .status,
        200
    );
    let seen = peer.last_request().unwrap();
    assert!(seen
        .header("authorization")
        .is_some_and(|v| v.starts_with("Basic ")));
    assert_eq!(get_as(&proxy, "/public/a", None).await.status, 200);

    // A user added to the file gets in without a restart.
    let live = proxy.dir().join("users.htpasswd");
    add_user(&live, "carol", "new password", false);
    let carol_in = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(proxy.dir().join("stderr.log"))
            .is_ok_and(|log| log.contains("htpasswd file loaded"))
    })
    .await;
    assert!(carol_in, "the changed file was read:\n{}", proxy.logs());
    assert_eq!(
        get_as(&proxy, "/album", Some(("carol", "new password")))
            .await
            .status,
        200
    );

    // A broken file is refused and the users read before still apply.
    let mut broken = std::fs::read_to_string(&live).unwrap();
    broken.push_str("dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    std::fs::write(&live, broken).unwrap();
    let refused = eventually(Duration::from_secs(10), || {
        proxy.logs().contains("htpasswd file not reloaded")
    })
    .await;
    assert!(refused, "{}", proxy.logs());
    assert!(
        proxy.logs().contains("line 4: user `dave`: SHA-1"),
        "{}",
        proxy.logs()
    );
    assert_eq!(
        get_as(&proxy, "/album", Some(("carol", "new password")))
            .await
            .status,
        200
    );

    // Logged and counted: the user's name, never a password or the header.
    let log = proxy.dir().join("access.log");
    let logged = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains(r#""user":"carol""#))
    })
    .await;
    assert!(logged, "the access log names authenticated users");
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        "correct horse",
        "battery staple",
        "new password",
        "Basic ",
        "YWxpY2",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` in the access log:\n{text}"
        );
        assert!(
            !proxy.logs().contains(secret),
            "`{secret}` in the process log"
        );
    }
    assert!(text
        .lines()
        .any(|l| l.contains(r#""status":401"#) && l.contains(r#""user":"""#)));
    let metrics = scrape(proxy.admin).await;
    for line in [
        r#"edge_auth_decisions_total{host="photos",outcome="denied"} 5"#,
        r#"edge_auth_decisions_total{host="photos",outcome="allowed"} 6"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[test]
fn unusable_htpasswd_files_are_refused_at_check_naming_file_and_line_never_the_hash() {
    let made = tempfile::tempdir().unwrap();
    let users = made.path().join("users.htpasswd");
    add_user(&users, "alice", "pw", true);
    let status = Command::new("htpasswd")
        .args(["-mb"])
        .arg(&users)
        .args(["bob", "pw"])
        .status()
        .expect("run htpasswd");
    assert!(status.success());
    let md5 = std::fs::read_to_string(&users).unwrap();
    let md5_hash = md5
        .lines()
        .nth(1)
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    assert!(md5_hash.starts_with("$apr1$"));
    let config = |file: &Path, realm: &str| {
        format!(
            r#"
[upstreams.photos]
address = "127.0.0.1:9"
[sites.photos]
hosts = ["{HOST}"]
[[sites.photos.locations]]
match = "/"
proxy = "photos"
auth = {{ basic = {{ htpasswd = "{}", realm = "{realm}" }} }}
"#,
            file.display()
        )
    };
    let (ok, out) = check(&config(&users, "Photos"));
    assert!(!ok);
    assert!(
        out.contains("sites.photos.locations[0].auth.basic.htpasswd"),
        "{out}"
    );
    assert!(
        out.contains("users.htpasswd` line 2: user `bob`: MD5"),
        "{out}"
    );
    assert!(!out.contains(&md5_hash), "{out}");

    let (ok, out) = check(&config(&made.path().join("missing"), "Photos"));
    assert!(!ok && out.contains("cannot read"), "{out}");

    std::fs::write(&users, md5.lines().next().unwrap()).unwrap();
    let (ok, out) = check(&config(&users, "Photos"));
    assert!(ok, "{out}");
    let (ok, out) = check(&config(&users, ""));
    assert!(!ok && out.contains("auth.basic.realm"), "{out}");
}

/// A forward-auth service on a listener the test holds: it answers by the `session` cookie
/// (`good`: 200 naming `alice`; `forbidden`: 403; `login`: a redirect; `broken`: 500;
/// `hang`: never; anything else: 401) and counts what it is asked.
struct AuthService {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl AuthService {
    async fn start() -> AuthService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Self::answer(stream, seen.clone()));
            }
        });
        AuthService { addr, asked }
    }

    async fn answer(mut stream: tokio::net::TcpStream, asked: Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        asked.lock().unwrap().push(head.clone());
        let session = head
            .lines()
            .find_map(|l| l.strip_prefix("cookie: "))
            .and_then(|c| c.split("; ").find_map(|p| p.strip_prefix("session=")))
            .unwrap_or("")
            .to_string();
        let (head, body) = match session.as_str() {
            "good" => ("200 OK\r\nX-User: alice\r\nX-Other: not copied", ""),
            "forbidden" => ("403 Forbidden\r\nContent-Type: text/plain", "no access\n"),
            "login" => ("302 Found\r\nLocation: https://login.example.com/?rd=apps", ""),
            "broken" => ("500 Internal Server Error", ""),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            _ => (
                "401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"sso\"\r\nSet-Cookie: tried=1\r\nContent-Type: text/plain",
                "who are you?\n",
            ),
        };
        let response = format!(
            "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn times_asked(&self) -> usize {
        self.asked.lock().unwrap().len()
    }

    fn last_asked(&self) -> String {
        self.asked
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

const APPS: &str = "apps.example.com";

/// `auth` is the service's `host:port`.
fn forward_config(tailnet: &fake_tailnet::FakeTailnet, auth: &str) -> String {
    format!(
        r#"{base}
[access_log]
path = "access.log"

[upstreams.apps]
address = "photos.{d}:{p}"

[sites.apps]
hosts = ["{APPS}"]
auth = {{ forward = {{ url = "http://{auth}/verify", copy_headers = ["X-User"], user_header = "X-User", timeout = "1s" }} }}

[[sites.apps.locations]]
match = "/"
proxy = "apps"

[[sites.apps.locations]]
match = "/cached/"
proxy = "apps"
auth = {{ forward = {{ url = "http://{auth}/verify", copy_headers = ["X-User"], cache = "10m", cache_key = ["cookie:session"] }} }}
"#,
        base = base_config(tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    )
}

async fn get_with_session(proxy: &Proxy, path: &str, session: &str) -> Reply {
    let request = client()
        .get(proxy.url(path))
        .header("host", APPS)
        .header("cookie", format!("theme=dark; session={session}"))
        .header("authorization", "Bearer client-token-123")
        .header("x-user", "mallory");
    Reply::read(request.send().await.expect("request")).await
}

#[tokio::test]
async fn forward_auth_allows_copies_headers_passes_refusals_fails_closed_and_caches() {
    let tailnet = tailnet(&["photos"]).await;
    let peer = tailnet.peer("photos").unwrap();
    let service = AuthService::start().await;
    // Reached by a tailnet name, resolved through MagicDNS as upstreams are.
    let name = tailnet.fqdn("auth");
    tailnet.set_answer(&name, vec![std::net::Ipv4Addr::LOCALHOST]);
    let auth = format!("{name}:{}", service.addr.port());
    let proxy = Proxy::start(&forward_config(&tailnet, &auth));

    // Allowed: the service's X-User reaches the upstream in place of the client's; the
    // client's credentials do not.
    let ok = get_with_session(&proxy, "/app/page?x=1", "good").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = peer.last_request().unwrap();
    let users: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == "x-user")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(users, ["alice"]);
    assert_eq!(seen.header("x-other"), None);
    assert_eq!(seen.header("authorization"), None);
    // The service was asked Traefik's way.
    let asked = service.last_asked();
    for line in [
        "get /verify http/1.1",
        "x-forwarded-method: get",
        "x-forwarded-proto: http",
        "x-forwarded-host: apps.example.com",
        "x-forwarded-uri: /app/page?x=1",
        "x-forwarded-for: 127.0.0.1",
        "authorization: bearer client-token-123",
        "cookie: theme=dark; session=good",
    ] {
        assert!(asked.contains(line), "`{line}` in\n{asked}");
    }

    // Refusals go back to the client as the service sent them, never upstream.
    let before = peer.requests();
    let refused = get_with_session(&proxy, "/app", "nobody").await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (401, "who are you?\n")
    );
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer realm="sso""#)
    );
    assert_eq!(refused.header("set-cookie"), Some("tried=1"));
    let forbidden = get_with_session(&proxy, "/app", "forbidden").await;
    assert_eq!(
        (forbidden.status, forbidden.body.as_str()),
        (403, "no access\n")
    );
    let login = get_with_session(&proxy, "/app", "login").await;
    assert_eq!(login.status, 302);
    assert_eq!(
        login.header("location"),
        Some("https://login.example.com/?rd=apps")
    );

    // Anything else fails closed.
    assert_eq!(get_with_session(&proxy, "/app", "broken").await.status, 503);
    assert_eq!(get_with_session(&proxy, "/app", "hang").await.status, 503);
    assert_eq!(
        peer.requests(),
        before,
        "no refused request reached the upstream"
    );

    // Answers remembered by session: the second request of each is not asked.
    let asked = service.times_asked();
    for session in ["good", "good", "forbidden", "forbidden"] {
        get_with_session(&proxy, "/cached/a", session).await;
    }
    assert_eq!(service.times_asked(), asked + 2);
    assert_eq!(
        get_with_session(&proxy, "/cached/b", "good").await.status,
        200
    );
    assert_eq!(peer.last_request().unwrap().header("x-user"), Some("alice"));
    assert_eq!(
        get_with_session(&proxy, "/cached/b", "forbidden")
            .await
            .status,
        403
    );
    assert_eq!(service.times_asked(), asked + 2);

    // Logged: the user, never the client's token; errors counted.
    let log = proxy.dir().join("access.log");
    let logged = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains(r#""user":"alice""#))
    })
    .await;
    assert!(logged);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("client-token-123"), "{text}");
    assert!(proxy.logs().contains("auth service"), "{}", proxy.logs());
    let metrics = scrape(proxy.admin).await;
    assert!(
        metrics.contains(r#"edge_auth_decisions_total{host="apps",outcome="error"} 2"#),
        "{metrics}"
    );
}
