//! Observability that needs the `proxy-app` process: the JSON access log reopened on SIGUSR1,
//! `run --wait-for-tailnet`, and the Fly dashboards against the exported metric names. The
//! admin listener, metric values and request ids are tested in-process in proxy-core's
//! `tests/observe.rs`.

mod common;

use common::*;
use fake_tailnet::{FakeLocalApi, FakeTailnet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `[server]`, `[admin]` (plus `admin_extra` lines), `[resolver]`, one `docs` upstream and
/// site, then `extra`.
fn config(tailnet: &FakeTailnet, admin_extra: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["{PUBLIC_LISTEN}"]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
unknown_host = 421

[admin]
listen = "{ADMIN_LISTEN}"
{admin_extra}

[resolver]
nameservers = ["{dns}"]
min_ttl = "1s"
max_ttl = "2s"
timeout = "500ms"
retry_interval = "300ms"

[upstreams.docs]
address = "docs.{domain}:{http}"

[sites.docs]
hosts = ["docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "docs"
[[sites.docs.locations]]
match = "= /robots.txt"
return = {{ status = 200, body = "robots\n" }}
{extra}
"#,
        dns = tailnet.dns_addr(),
        domain = tailnet.domain(),
        http = tailnet.http_port(),
    )
}

#[tokio::test]
async fn access_log_lines_are_json_with_redaction_and_reopen_on_sigusr1() {
    let tailnet = tailnet(&["docs"]).await;
    let extra = "[access_log]\npath = \"access.log\"\nredact_query_params = [\"token\", \"sig\"]\n";
    let proxy = Proxy::start(&config(&tailnet, "", extra));
    let response = client()
        .get(proxy.url("/page?token=s3cret-tok&page=2&sig=s3cret-sig"))
        .header("host", "docs.example.com")
        .header("authorization", "Bearer s3cret-auth")
        .header("cookie", "session=s3cret-cookie")
        .header("user-agent", "observe-test/1")
        .header("referer", "https://a.example/?token=s3cret-ref")
        .header("x-request-id", "log-req-1")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body_len = response.bytes().await.expect("the body").len();
    assert!(body_len > 0);

    let log_path = proxy.dir().join("access.log");
    let line = wait_for_line(&log_path, "log-req-1").await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["site"], "docs");
    assert_eq!(entry["location"], "/");
    assert_eq!(entry["host"], "docs.example.com");
    assert_eq!(entry["uri"], "/page?token=REDACTED&page=2&sig=REDACTED");
    assert_eq!(entry["referer"], "https://a.example/?token=REDACTED");
    assert_eq!(entry["user_agent"], "observe-test/1");
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert_eq!(entry["request_id"], "log-req-1");
    assert_eq!(entry["upstream_cache_status"], "");
    assert_eq!(entry["rate_limit"], "");
    assert_eq!(entry["upstream_status"], 200);
    assert_eq!(entry["body_bytes_sent"], body_len, "{line}");
    assert!(entry["request_time"].is_f64(), "{line}");
    assert!(entry["upstream_response_time"].is_f64(), "{line}");
    let upstream = tailnet.peer("docs").expect("docs").http_addr().to_string();
    assert_eq!(entry["upstream_addr"], upstream.as_str());
    assert!(entry["remote_addr"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));
    let time = entry["time"].as_str().unwrap_or("");
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "{time}"
    );
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !text.contains("s3cret"),
        "a secret reached the log:\n{text}"
    );

    // Rotation: move the file away, SIGUSR1, and the next line lands in a new file.
    std::fs::rename(&log_path, proxy.dir().join("access.log.1")).expect("rotate");
    proxy.signal("USR1");
    let reopened = eventually(Duration::from_secs(10), || {
        let _ = raw_request(
            proxy.addr,
            "GET /robots.txt HTTP/1.1\r\nHost: docs.example.com\r\nX-Request-Id: after-rotate\r\nConnection: close\r\n\r\n",
        );
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.contains("after-rotate"))
    })
    .await;
    assert!(reopened, "no line in the reopened log:\n{}", proxy.logs());
}

#[tokio::test]
async fn a_client_that_goes_away_is_no_error_but_an_upstream_that_fails_is() {
    let tailnet = tailnet(&["docs"]).await;
    let extra = format!(
        "[access_log]\npath = \"access.log\"\n\n\
         [upstreams.gone]\naddress = \"gone.{domain}:{http}\"\n\n\
         [sites.gone]\nhosts = [\"gone.example.com\"]\n\
         [[sites.gone.locations]]\nmatch = \"/\"\nproxy = \"gone\"\n",
        domain = tailnet.domain(),
        http = tailnet.http_port(),
    );
    let proxy = Proxy::start(&config(&tailnet, "", &extra));
    let peer = tailnet.peer("docs").expect("docs").clone();

    // The client closes its side while the upstream works on the answer, as a crawler that
    // times out does: the access log has it as 499, the error log nothing.
    let mut stream = std::net::TcpStream::connect(proxy.addr).expect("connect");
    stream
        .write_all(b"GET /slow?delay_ms=3000 HTTP/1.1\r\nHost: docs.example.com\r\nX-Request-Id: gave-up\r\n\r\n")
        .expect("request");
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    stream.shutdown(std::net::Shutdown::Write).expect("close");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let log_path = proxy.dir().join("access.log");
    let line = wait_for_line(&log_path, "gave-up").await;
    assert!(line.contains(r#""status":499"#), "{line}");

    // An upstream that cannot be reached is the proxy's to report.
    let failed = raw_request(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: gone.example.com\r\nX-Request-Id: upstream-failed\r\nConnection: close\r\n\r\n",
    );
    assert!(failed.starts_with("HTTP/1.1 50"), "{failed}");
    wait_for_line(&log_path, "upstream-failed").await;
    let logs = proxy.logs();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.iter().any(|l| l.contains("gone.example.com")),
        "the upstream failure is an error:\n{logs}"
    );
    assert!(
        errors.iter().all(|l| !l.contains("/slow")),
        "the client's leaving is not:\n{logs}"
    );
}

async fn wait_for_line(path: &Path, needle: &str) -> String {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found = text.lines().find(|l| l.contains(needle)).map(str::to_owned);
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("no access-log line with {needle} in {}", path.display()))
}

/// Starts `proxy-app run --wait-for-tailnet=LIMIT` without waiting for it.
fn spawn_waiting(config_text: &str, dir: &Path, limit: &str) -> std::process::Child {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config_text).expect("write config");
    Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .arg(format!("--wait-for-tailnet={limit}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy-app")
}

#[tokio::test]
async fn wait_for_tailnet_holds_the_listener_until_running_and_gives_up_after_the_limit() {
    let tailnet = tailnet(&["docs"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let localapi = FakeLocalApi::start(dir.path().join("ts.sock"), "Stopped").expect("LocalAPI");
    let admin_extra = format!("tailscaled_socket = \"{}\"", localapi.path().display());

    // Gives up: exits with an error naming the state.
    let child = spawn_waiting(&config(&tailnet, &admin_extra, ""), dir.path(), "300ms");
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tailscaled is Stopped"), "{stderr}");

    // Waits: no listener while Starting, serves once Running.
    localapi.set_state("Starting");
    let mut child = spawn_waiting(&config(&tailnet, &admin_extra, ""), dir.path(), "60s");
    let before = localapi.requests();
    let polled = eventually(Duration::from_secs(10), || {
        localapi.requests() >= before + 2
    })
    .await;
    assert!(polled, "proxy-app never asked the LocalAPI");
    assert_eq!(
        listening_addrs(child.id()),
        [],
        "a listener open before the tailnet is up"
    );
    localapi.set_state("Running");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut serving = false;
    while Instant::now() < deadline {
        let answer = public_listener(child.id()).map(|addr| {
            raw_request(
                addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        });
        if answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "proxy-app did not serve after the tailnet came up");
}

#[test]
fn dashboards_use_only_exported_metrics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fly/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fly/dashboards") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with(proxy_core::observe::PREFIX) {
                continue;
            }
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|b| proxy_core::observe::METRIC_NAMES.contains(b))
                .unwrap_or(word);
            assert!(
                proxy_core::observe::METRIC_NAMES.contains(&base),
                "{}: unknown metric {word}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "dashboards reference too few metrics");
}
