//! `proxy-app demo`: a fake tailnet started in-process and the proxy in front of it, so the
//! whole product can be tried with nothing installed.

use anyhow::Context;
use fake_tailnet::{FakeTailnet, TailnetConfig, TAILNET_CA_PEM};
use proxy_core::config::load_str_with;
use proxy_core::RuntimeConfig;
use std::path::Path;

const TEMPLATE: &str = include_str!("demo.toml");

const LANDING_PAGE: &str = "<!doctype html>\n<html><body><h1>Welcome</h1>\n<p>This landing page is served from local files by the `static` plugin, even when the tailnet is down.</p></body></html>\n";

const ERROR_PAGE: &str = "<!doctype html>\n<html><body><h1>Photos are taking a nap</h1>\n<p>The photo server is unreachable right now (this is the demo's custom 502 page).</p></body></html>\n";

/// The challenge's signing key in the demo, unless `DEMO_CHALLENGE_KEY` is set: the demo
/// runs on loopback only, so a known key is no secret worth keeping.
const DEMO_CHALLENGE_KEY: &str = "demo-only-challenge-key-never-use-it-in-production";

/// Starts the fake tailnet and returns the demo config pointing at it.
pub fn run(listen: &str, admin: &str) -> anyhow::Result<RuntimeConfig> {
    // Set before any thread of ours starts, so nothing reads the environment meanwhile.
    if std::env::var_os("DEMO_CHALLENGE_KEY").is_none() {
        std::env::set_var("DEMO_CHALLENGE_KEY", DEMO_CHALLENGE_KEY);
    }
    let mut tailnet_config = TailnetConfig::new(&["docs", "git"]);
    tailnet_config.ttl = 30;
    let tailnet =
        FakeTailnet::start_in_thread(tailnet_config).context("starting the fake tailnet")?;
    // A name that resolves but has no peer behind it, to show the site's error page.
    let offline = tailnet.fqdn("photos-offline");
    tailnet.set_answer(&offline, vec![std::net::Ipv4Addr::new(127, 100, 254, 254)]);

    let dir = std::env::temp_dir().join(format!("proxy-app-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_file = dir.join("tailnet-ca.pem");
    std::fs::write(&ca_file, TAILNET_CA_PEM).context("writing the demo CA file")?;
    let landing = dir.join("landing");
    std::fs::create_dir_all(&landing).context("creating the demo landing page")?;
    std::fs::write(landing.join("index.html"), LANDING_PAGE)
        .context("writing the demo landing page")?;
    let error_page = dir.join("photos-502.html");
    std::fs::write(&error_page, ERROR_PAGE).context("writing the demo error page")?;

    let text = TEMPLATE
        .replace("{listen}", listen)
        .replace("{admin}", admin)
        .replace("{dns}", &tailnet.dns_addr().to_string())
        .replace("{domain}", tailnet.domain())
        .replace("{http_port}", &tailnet.http_port().to_string())
        .replace("{https_port}", &tailnet.https_port().to_string())
        .replace("{ca_file}", &ca_file.display().to_string())
        .replace("{error_page}", &error_page.display().to_string())
        .replace("{landing_dir}", &landing.display().to_string());
    let config = load_str_with(
        &text,
        Some(Path::new("demo.toml")),
        &dir,
        &plugins::builtin_registry(),
    )
    .map_err(|e| anyhow::anyhow!("the built-in demo config is invalid:\n{e}"))?;
    print_instructions(listen, admin, &tailnet);
    // The tailnet runs on its own thread for the life of the process.
    std::mem::forget(tailnet);
    Ok(config)
}

fn print_instructions(listen: &str, admin: &str, tailnet: &FakeTailnet) {
    let port = listen.rsplit(':').next().unwrap_or("8080");
    println!(
        "\nproxy-app demo: fake tailnet `{domain}` with MagicDNS at {dns}\n\
         public listener http://{listen}/\n\n\
         Try:\n  \
         curl -i http://docs.demo.localhost:{port}/             # proxied over TLS to docs.{domain}; run twice: X-Cache-Status: HIT; security headers\n  \
         curl -i http://docs.demo.localhost:{port}/robots.txt   # answered at the edge\n  \
         curl -i http://git.demo.localhost:{port}/__echo        # see the forwarded headers\n  \
         curl -i http://git.demo.localhost:{port}/u/repo/archive/main.zip   # redirect\n  \
         curl -i http://git.demo.localhost:{port}/u/repo/commits/main       # proof-of-work challenge (open it in a browser: it solves it)\n  \
         curl -i -A git/2.39 http://git.demo.localhost:{port}/u/repo/commits/main   # git passes unchallenged\n  \
         curl -i -H 'Fly-Client-IP: 203.0.113.9' http://git.demo.localhost:{port}/wp-login.php   # trap path: 203.0.113.9 is banned\n  \
         curl -i -H 'Fly-Client-IP: 203.0.113.9' http://git.demo.localhost:{port}/         # banned: 403 before routing\n  \
         curl -i http://photos.demo.localhost:{port}/           # peer down: the site's 502 page\n  \
         curl -i http://www.demo.localhost:{port}/              # landing page from local files (static plugin)\n  \
         for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}}\\n' http://docs.demo.localhost:{port}/login; done   # 1r/s burst 3: 429s\n  \
         curl -i http://unknown.demo.localhost:{port}/          # unknown host: 421, never forwarded\n  \
         curl -i http://127.0.0.1:{port}/healthz                # health check, any Host\n  \
         curl -s http://{admin}/metrics                 # Prometheus metrics (admin listener)\n  \
         curl -i http://{admin}/readyz                  # readiness\n\n\
         (curl resolves *.localhost to 127.0.0.1; with other clients add -H 'Host: docs.demo.localhost'.)\n",
        domain = tailnet.domain(),
        dns = tailnet.dns_addr(),
    );
}
