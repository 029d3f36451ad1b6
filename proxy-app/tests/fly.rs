//! The Fly.io deployment, checked without Docker or Fly: the entrypoint script (shellcheck,
//! and run end to end with stand-in tailscaled/tailscale against a fake LocalAPI),
//! fly.toml against proxy.toml, and the Dockerfile's promises.

mod common;

use common::*;
use fake_tailnet::FakeLocalApi;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn fly(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fly")
        .join(file)
}

fn toml_file(file: &str) -> toml::Table {
    let text = std::fs::read_to_string(fly(file)).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid TOML: {e}"))
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Fails with shellcheck's findings unless `script` passes it at style severity.
fn assert_shellcheck_clean(script: &Path, options: &[&str]) {
    let out = Command::new("shellcheck")
        .args(options)
        .arg("--severity=style")
        .arg(script)
        .output()
        .expect("shellcheck is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn start_script_is_shellcheck_clean() {
    assert_shellcheck_clean(&fly("start.sh"), &["--shell=sh"]);
}

#[test]
fn fly_toml_agrees_with_proxy_toml() {
    let fly_toml = toml_file("fly.toml");
    let proxy = toml_file("proxy.toml");
    let server = proxy["server"].as_table().unwrap();
    let http = fly_toml["http_service"].as_table().unwrap();

    let listen = server["listen"].as_array().unwrap()[0].as_str().unwrap();
    assert_eq!(
        http["internal_port"].as_integer().unwrap(),
        port_of(listen),
        "internal_port = public listener"
    );
    assert_eq!(http["force_https"].as_bool(), Some(true));
    let concurrency = http["concurrency"].as_table().unwrap();
    assert_eq!(concurrency["type"].as_str(), Some("requests"));
    assert!(concurrency["soft_limit"].as_integer() < concurrency["hard_limit"].as_integer());
    let check = http["checks"].as_array().unwrap()[0].as_table().unwrap();
    assert_eq!(
        check["path"].as_str(),
        Some("/healthz"),
        "the path proxy-app answers for any Host"
    );

    assert_eq!(
        fly_toml["kill_signal"].as_str(),
        Some("SIGTERM"),
        "proxy-app drains on SIGTERM"
    );
    // Fly must not kill the process while it drains, winds down or makes its last push.
    let duration =
        |value: &toml::Value| humantime::parse_duration(value.as_str().unwrap()).unwrap();
    let grace = duration(&server["grace_period"]);
    let shutdown = duration(&server["shutdown_timeout"]);
    let telemetry = proxy["telemetry"].as_table().unwrap();
    let last_push = ["prometheus", "loki"]
        .iter()
        .map(|sink| duration(&telemetry[*sink]["timeout"]))
        .max()
        .unwrap();
    let kill_timeout = Duration::from_secs(fly_toml["kill_timeout"].as_integer().unwrap() as u64);
    assert!(
        kill_timeout > grace + shutdown + last_push,
        "kill_timeout {kill_timeout:?} must exceed the grace period {grace:?}, the shutdown \
         timeout {shutdown:?} and the last telemetry push {last_push:?}"
    );

    let metrics = fly_toml["metrics"].as_table().unwrap();
    let admin = proxy["admin"]["listen"].as_str().unwrap();
    assert_eq!(
        metrics["port"].as_integer().unwrap(),
        port_of(admin),
        "[metrics] reads the admin listener"
    );
    assert_eq!(metrics["path"].as_str(), Some("/metrics"));
    assert_ne!(
        port_of(admin),
        port_of(listen),
        "admin is never the public port"
    );

    let udp = fly_toml["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["protocol"].as_str() == Some("udp"))
        .expect("a UDP service for WireGuard");
    assert_eq!(udp["internal_port"].as_integer(), Some(41641));
    let vm = fly_toml["vm"].as_array().unwrap()[0].as_table().unwrap();
    assert_eq!(vm["size"].as_str(), Some("shared-cpu-1x"));

    let text = std::fs::read_to_string(fly("fly.toml")).unwrap()
        + &std::fs::read_to_string(fly("proxy.toml")).unwrap();
    assert!(!text.contains("tskey-"), "no auth key in the repository");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(fly("proxy.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfile_builds_checks_and_runs_unprivileged() {
    let text = std::fs::read_to_string(fly("Dockerfile")).unwrap();
    let from_count = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(from_count >= 2, "multi-stage build");
    assert!(
        text.contains("apt-get install -y --no-install-recommends cmake clang"),
        "BoringSSL's build needs cmake and clang"
    );
    assert!(
        text.contains("sha256sum -c"),
        "the tailscale download is checksum-verified"
    );
    assert!(
        text.contains("RUN proxy-app check --config /etc/proxy-app/proxy.toml"),
        "a broken config never ships"
    );
    assert!(
        text.contains("useradd --system"),
        "an unprivileged user exists"
    );
    assert!(text.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/start.sh\"]"));
    // Every file the image copies from the repository exists.
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let source = line.split_whitespace().nth(1).unwrap();
        if source != "." {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(source)
                    .exists(),
                "{source} missing"
            );
        }
    }
    let script = std::fs::read_to_string(fly("start.sh")).unwrap();
    assert!(
        script.contains("setpriv --reuid=\"$proxy_user\""),
        "proxy-app drops root"
    );
    assert!(
        script.contains("exec \"$@\""),
        "proxy-app replaces the script so signals reach it"
    );
}

/// The build stage's command that builds proxy-app: its `RUN` line and continuations, joined
/// as Docker joins them (a backslash and the line break after it removed).
fn build_command(dockerfile: &str) -> String {
    let mut lines = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("RUN case \"$PGO\""));
    let mut command = String::new();
    for line in lines.by_ref() {
        let (text, more) = match line.strip_suffix('\\') {
            Some(text) => (text, true),
            None => (line, false),
        };
        command.push_str(text);
        if !more {
            break;
        }
    }
    command
        .strip_prefix("RUN ")
        .expect("the build stage builds proxy-app in a `RUN case \"$PGO\"` command")
        .to_owned()
}

/// Runs the Dockerfile's build command with `PGO` set to `pgo`, in a directory where
/// `scripts/pgo-build.sh`, `cargo` and `install` are stand-ins that record their arguments.
/// Returns whether it succeeded, its stderr, and the recorded calls.
fn run_build_command(pgo: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let stand_in = |path: PathBuf, name: &str| {
        let body = format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n", calls.display());
        std::fs::write(&path, body).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    stand_in(dir.path().join("scripts/pgo-build.sh"), "pgo-build.sh");
    stand_in(bin.join("cargo"), "cargo");
    stand_in(bin.join("install"), "install");
    let dockerfile = std::fs::read_to_string(fly("Dockerfile")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .arg("-c")
        .arg(build_command(&dockerfile))
        .current_dir(dir.path())
        .env("PATH", path)
        .env("PGO", pgo)
        .output()
        .unwrap();
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        recorded,
    )
}

#[test]
fn the_image_builds_proxy_app_with_pgo_by_default_and_plainly_on_request() {
    let dockerfile = std::fs::read_to_string(fly("Dockerfile")).unwrap();
    let build_stage = dockerfile
        .split("FROM ")
        .find(|stage| stage.contains("AS build"))
        .unwrap();
    assert!(
        build_stage.contains("\nARG PGO=1\n"),
        "PGO is on by default"
    );

    // The same features either way: the production build leaves the demo out.
    let (ok, stderr, calls) = run_build_command("1");
    assert!(ok, "{stderr}");
    assert_eq!(
        calls,
        "pgo-build.sh /usr/local/bin/proxy-app --locked --no-default-features\n"
    );
    let (ok, stderr, calls) = run_build_command("0");
    assert!(ok, "{stderr}");
    assert_eq!(
        calls,
        "cargo build --release --locked -p proxy-app --no-default-features\n\
         install -m 0755 target/release/proxy-app /usr/local/bin/proxy-app\n"
    );
    let (ok, stderr, calls) = run_build_command("yes");
    assert!(!ok, "an unknown PGO value fails the build");
    assert!(stderr.contains("PGO must be 1"), "{stderr}");
    assert_eq!(calls, "", "and builds nothing");
}

#[test]
fn the_pgo_build_script_is_shellcheck_clean_and_explains_its_arguments() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pgo-build.sh");
    assert_shellcheck_clean(&script, &[]);
    // Without OUT, or with an option where OUT belongs, it builds nothing and says why.
    for args in [&[][..], &["--locked"][..]] {
        let out = Command::new(&script).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("usage:"), "{stderr}");
    }
}

#[test]
fn the_build_context_leaves_out_local_build_output() {
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dockerignore"))
            .expect("a .dockerignore beside the workspace");
    let entries: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for wanted in ["target/", "fuzz/target/", ".git/"] {
        assert!(entries.contains(&wanted), "{wanted} in .dockerignore");
    }
    // Nothing the build needs is left out.
    for needed in [
        "scripts",
        "benches",
        "testing",
        "vendor",
        "proxy-core",
        "Cargo.lock",
    ] {
        assert!(
            !entries.iter().any(|e| e.trim_end_matches('/') == needed),
            "{needed} is ignored"
        );
    }
}

/// Stand-ins for tailscaled and tailscale that record their arguments.
fn stand_ins(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$@\" >> \"{}/{name}.args\"\n{body}\n",
                dir.display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    // Lives as long as its parent (the script, later proxy-app), like the real daemon here.
    script(
        "tailscaled",
        "while kill -0 \"$PPID\" 2>/dev/null; do sleep 0.2; done",
    );
    script("tailscale", "exit 0");
    std::os::unix::fs::symlink(binary(), bin.join("proxy-app")).unwrap();
    bin
}

#[test]
fn start_script_refuses_to_run_without_an_auth_key() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_ins(dir.path());
    let out = Command::new("sh")
        .arg(fly("start.sh"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env_remove("TS_AUTHKEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TS_AUTHKEY is not set") && stderr.contains("fly secrets set TS_AUTHKEY"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("tailscaled.args").exists(),
        "nothing started"
    );
}

#[tokio::test]
async fn start_script_opens_the_public_port_only_after_running_and_drains_on_sigterm() {
    let tailnet = tailnet(&["docs"]).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_ins(dir.path());
    let socket = dir.path().join("tailscaled.sock");
    let localapi = FakeLocalApi::start(&socket, "Starting").unwrap();
    let config = format!(
        "{}\n[upstreams.docs]\naddress = \"docs.{}:{}\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n",
        base_config(&tailnet).replace("[admin]\n", &format!("[admin]\ntailscaled_socket = \"{}\"\n", socket.display())),
        tailnet.domain(),
        tailnet.http_port()
    );
    let config_path = dir.path().join("proxy.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new("sh")
        .arg(fly("start.sh"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("TS_AUTHKEY", "tskey-auth-test")
        .env("TS_HOSTNAME", "edge-test")
        .env("TS_SOCKET", &socket)
        .env("TS_STATE_DIR", dir.path().join("state"))
        .env("PROXY_CONFIG", &config_path)
        .env("PROXY_USER", "")
        .env("TAILNET_WAIT", "30s")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("start.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let healthz = || {
        public_listener(pid).map_or(String::new(), |addr| {
            raw_request(
                addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
    };

    // tailscaled started and `tailscale up` ran with the key and hostname...
    let args = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.args"))).unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(10), || args("tailscale").contains("up")).await,
        "tailscale up never ran"
    );
    assert!(
        args("tailscaled").contains("--tun=tailscale0"),
        "{}",
        args("tailscaled")
    );
    assert!(
        args("tailscale").contains("--authkey=tskey-auth-test --hostname=edge-test"),
        "{}",
        args("tailscale")
    );
    // ...but the public port stays closed while tailscaled is not Running.
    assert!(
        eventually(Duration::from_secs(10), || localapi.requests() >= 2).await,
        "proxy-app never asked the LocalAPI"
    );
    assert_eq!(
        public_listener(pid),
        None,
        "public port open before Running"
    );

    localapi.set_state("Running");
    assert!(
        eventually(Duration::from_secs(15), || healthz()
            .starts_with("HTTP/1.1 200"))
        .await,
        "{}",
        std::fs::read_to_string(dir.path().join("start.log")).unwrap_or_default()
    );

    // SIGTERM (what Fly sends) reaches proxy-app, which exec'ed over the script: an
    // in-flight request finishes and the process exits 0.
    let addr = public_listener(pid).expect("the public listener");
    let url = format!("http://{addr}/?delay_ms=1000");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .header("host", "docs.example.com")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let peer = tailnet.peer("docs").unwrap().clone();
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert_eq!(
        in_flight
            .await
            .unwrap()
            .expect("in-flight request finished"),
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn tailscale_is_pinned_with_its_published_checksum() {
    let fly_toml = toml_file("fly.toml");
    let args = fly_toml["build"]["args"].as_table().unwrap();
    assert_eq!(args["TAILSCALE_VERSION"].as_str(), Some("1.102.3"));
    // The SHA-256 of tailscale_1.102.3_amd64.tgz, as published next to it.
    assert_eq!(
        args["TAILSCALE_SHA256"].as_str(),
        Some("36ddd9b51be57ffc2990cf76323cfa13643bfbb1b8a969f6183fa164741cdef5")
    );
    let dockerfile = std::fs::read_to_string(fly("Dockerfile")).unwrap();
    for arg in ["ARG TAILSCALE_VERSION", "ARG TAILSCALE_SHA256"] {
        assert!(dockerfile.contains(arg), "{arg}");
    }
    assert!(
        dockerfile.contains("echo \"${TAILSCALE_SHA256}  /tmp/tailscale.tgz\" | sha256sum -c -")
    );
    assert!(dockerfile.contains("tailscale_${TAILSCALE_VERSION}_amd64.tgz"));
}

/// The receivers `proxy.toml` pushes to: (host, port) of each URL.
fn telemetry_receivers(proxy: &toml::Table) -> Vec<(String, u16)> {
    let telemetry = proxy["telemetry"]
        .as_table()
        .expect("[telemetry] in proxy.toml");
    [("prometheus", "remote_write"), ("loki", "url")]
        .iter()
        .map(|(sink, key)| {
            let url = telemetry[*sink][*key].as_str().unwrap();
            let rest = url.strip_prefix("https://").expect("HTTPS to the homelab");
            let authority = rest.split('/').next().unwrap();
            match authority.split_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse().unwrap()),
                None => (authority.to_owned(), 443),
            }
        })
        .collect()
}

#[test]
fn proxy_toml_ships_metrics_and_logs_to_the_homelab_over_the_tailnet() {
    let proxy = toml_file("proxy.toml");
    let telemetry = proxy["telemetry"].as_table().unwrap();
    assert_eq!(
        telemetry["labels"]["instance"].as_str(),
        Some("flyio-proxy"),
        "the label Alloy put on every series and stream"
    );
    assert_eq!(
        telemetry["loki"]["labels"]["job"].as_str(),
        Some("flyio-nginx")
    );
    for (host, _) in telemetry_receivers(&proxy) {
        assert!(host.ends_with(".ts.net"), "{host} is a tailnet name");
    }
    for sink in ["prometheus", "loki"] {
        let section = telemetry[sink].as_table().unwrap();
        assert_ne!(section.get("verify").and_then(|v| v.as_bool()), Some(false));
        // Secrets are named, never written: only `*_env` keys may refer to credentials.
        for key in section.keys() {
            assert!(
                !key.contains("token") && !key.contains("password") || key.ends_with("_env"),
                "{sink}.{key}"
            );
        }
    }
}

#[test]
fn the_runbook_acl_grants_exactly_the_backends_and_the_two_write_endpoints() {
    let runbook = std::fs::read_to_string(fly("README.md")).unwrap();
    let section = runbook
        .split("## Least-privilege tailnet ACL")
        .nth(1)
        .expect("an ACL section");
    let json = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a policy block");
    let policy: serde_json::Value = serde_json::from_str(json).expect("the policy parses");
    let grants = policy["grants"].as_array().unwrap();

    let proxy = toml_file("proxy.toml");
    let mut ports: Vec<u16> = proxy["upstreams"]
        .as_table()
        .unwrap()
        .values()
        .map(|u| port_of(u["address"].as_str().unwrap()) as u16)
        .collect();
    ports.extend(telemetry_receivers(&proxy).iter().map(|(_, port)| *port));
    assert_eq!(
        grants.len(),
        ports.len(),
        "one grant per upstream and per telemetry receiver"
    );
    let mut granted: Vec<u16> = Vec::new();
    let mut destinations = std::collections::BTreeSet::new();
    for grant in grants {
        assert_eq!(grant["src"], serde_json::json!(["tag:edge"]), "{grant}");
        let dst = grant["dst"].as_array().unwrap();
        assert_eq!(dst.len(), 1, "{grant}");
        let dst = dst[0].as_str().unwrap();
        assert!(dst.starts_with("tag:") && dst != "tag:edge", "{grant}");
        assert!(destinations.insert(dst.to_owned()), "{dst} granted twice");
        let ip = grant["ip"].as_array().unwrap();
        assert_eq!(ip.len(), 1, "{grant}");
        let port = ip[0].as_str().unwrap().strip_prefix("tcp:").unwrap();
        granted.push(port.parse().unwrap());
    }
    ports.sort_unstable();
    granted.sort_unstable();
    assert_eq!(granted, ports);
    for tag in &destinations {
        assert!(policy["tagOwners"][tag].is_array(), "{tag} has an owner");
    }
}

#[test]
fn alert_rules_pass_promtool_and_use_exported_metrics() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(fly("alerts.yml"))
        .output()
        .expect("promtool is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(fly("alerts.yml")).unwrap();
    let names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("edge_"))
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        assert!(
            proxy_core::observe::METRIC_NAMES.contains(&name),
            "alerts.yml uses {name}, which the proxy does not export"
        );
    }
}
