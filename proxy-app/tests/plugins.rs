//! Plugins attached from config: the built-in `headers` plugin end to end, and plugin errors.

mod common;

use common::*;
use std::process::Command;

fn config(port: u16, tailnet: &fake_tailnet::FakeTailnet) -> String {
    format!(
        r#"{base}
[upstreams.app]
address = "app.{d}:{p}"
[upstreams.down]
address = "down.{d}:{p}"

[sites.app]
hosts = ["app.example.com"]

[[sites.app.plugins]]
use = "headers"
preset = "security"
remove = ["x-fake-peer"]
request_set = {{ "x-edge" = "yes" }}

[[sites.app.locations]]
match = "/"
proxy = "app"

[[sites.app.locations]]
match = "/assets/"
proxy = "app"
plugins = [{{ use = "headers", set = {{ "cache-control" = "public, max-age=604800" }} }}]

[[sites.app.locations]]
match = "/bare/"
proxy = "app"
site_plugins = false
plugins = [{{ use = "headers", add = {{ "x-bare" = "1" }} }}]

[[sites.app.locations]]
match = "= /robots.txt"
return = {{ status = 200, body = "User-agent: *\n" }}

[[sites.app.locations]]
match = "/down/"
proxy = "down"
"#,
        base = base_config(port, tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    )
}

const SECURITY: [&str; 4] = [
    "strict-transport-security",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
];

#[tokio::test]
async fn headers_plugin_applies_to_every_response_and_merges_site_and_location() {
    let tailnet = tailnet(&["app", "down"]).await;
    tailnet.peer("down").unwrap().stop();
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, &tailnet));

    // Proxied, local return, 404-free error (502 from a down peer): all get the site headers.
    for (path, status) in [
        ("/", 200),
        ("/robots.txt", 200),
        ("/down/x", 502),
        ("/assets/a.css", 200),
    ] {
        let reply = get(&proxy, "app.example.com", path).await;
        assert_eq!(reply.status, status, "{path}");
        for name in SECURITY {
            assert!(reply.header(name).is_some(), "{path}: missing {name}");
        }
        assert_eq!(reply.header("x-fake-peer"), None, "{path}: removed");
    }
    // The location's headers come on top of the site's (nginx would drop the site's).
    let assets = get(&proxy, "app.example.com", "/assets/a.css").await;
    assert_eq!(
        assets.header("cache-control"),
        Some("public, max-age=604800")
    );
    assert_eq!(assets.header("x-frame-options"), Some("SAMEORIGIN"));
    // Unless the location opts out of the site's plugins.
    let bare = get(&proxy, "app.example.com", "/bare/x").await;
    assert_eq!(bare.header("x-bare"), Some("1"));
    assert_eq!(bare.header("x-frame-options"), None);
    assert_eq!(bare.header("x-fake-peer"), Some("app"));
    // Request headers set by the plugin reach the upstream.
    get(&proxy, "app.example.com", "/").await;
    let seen = tailnet.peer("app").unwrap().last_request().unwrap();
    assert_eq!(seen.header("x-edge"), Some("yes"));
}

#[test]
fn plugin_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let text = "[upstreams.a]\naddress = \"10.0.0.1:80\"\n[sites.a]\nhosts = [\"a.example.com\"]\n[[sites.a.plugins]]\nuse = \"headerz\"\n[[sites.a.locations]]\nmatch = \"/\"\nproxy = \"a\"\nplugins = [{ use = \"headers\", colour = \"red\" }]\n";
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "edge.toml:5: sites.a.plugins[0]: unknown plugin `headerz` (available: headers)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("edge.toml:10: sites.a.locations[0].plugins[0]: unknown option `colour`"),
        "{stderr}"
    );
}
