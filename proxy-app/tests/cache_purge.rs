//! Purge through proxy-core's API ([`proxy_core::cache::EdgeCache::purge`]), the way the
//! admin listener calls it: the proxy runs in-process so the test holds the cache handle.

mod common;

use common::*;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use proxy_core::cache::{EdgeCache, PurgeScope};
use proxy_core::config::load_str;
use proxy_core::{server_conf, EdgeServices};
use std::path::Path;
use std::time::Duration;

/// Starts the proxy in a background thread of this process; returns its cache.
fn start_in_process(port: u16, config: &str) -> &'static EdgeCache {
    let config = load_str(config, None, Path::new(".")).expect("valid config");
    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(config.server()));
    server.bootstrap();
    let services = EdgeServices::new(&server.configuration, config);
    services.prime_resolver(Duration::from_secs(5));
    let cache = services.cache();
    services.add_to(&mut server);
    // Runs until the test process exits.
    std::thread::spawn(move || server.run(RunArgs::default()));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..300 {
        let reply = raw_request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if reply.starts_with("HTTP/1.1 200") {
            return cache;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("in-process proxy did not become ready");
}

async fn status_of(port: u16, host: &str, path: &str) -> String {
    status_in(port, host, path, "en").await
}

/// The cache status of a GET in language `lang` (a separate entry per language).
async fn status_in(port: u16, host: &str, path: &str, lang: &str) -> String {
    let response = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .header("accept-language", lang)
        .send()
        .await
        .expect("request through the proxy");
    let reply = Reply::read(response).await;
    reply.header("x-cache-status").unwrap_or("-").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_and_by_host() {
    let tailnet = tailnet(&["docs"]).await;
    let port = free_port();
    let config = format!(
        r#"{base}
[upstreams.docs]
address = "docs.{d}:{p}"
[sites.docs]
hosts = ["docs.example.com", "wiki.example.com"]
cache = {{ key_headers = ["Accept-Language"] }}
[[sites.docs.locations]]
match = "/"
proxy = "docs"
"#,
        base = base_config(port, &tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port(),
    );
    let cache = tokio::task::block_in_place(|| start_in_process(port, &config));
    let docs = "docs.example.com";
    for path in ["/a", "/a?v=2", "/b"] {
        assert_eq!(status_of(port, docs, path).await, "MISS");
        assert_eq!(status_of(port, docs, path).await, "HIT");
    }
    assert_eq!(status_in(port, docs, "/a", "fr").await, "MISS");
    assert_eq!(status_in(port, docs, "/a", "fr").await, "HIT");
    assert_eq!(status_of(port, "wiki.example.com", "/a").await, "MISS");

    // By URL: every query string and variant of the path, on that host only.
    let url = PurgeScope::Url {
        host: "Docs.Example.com:8080".into(),
        path: "/a?ignored=1".into(),
    };
    assert_eq!(cache.purge(&url), 3);
    assert_eq!(status_of(port, docs, "/a").await, "MISS");
    assert_eq!(status_in(port, docs, "/a", "fr").await, "MISS");
    assert_eq!(status_of(port, docs, "/a?v=2").await, "MISS");
    assert_eq!(status_of(port, docs, "/b").await, "HIT");
    assert_eq!(status_of(port, "wiki.example.com", "/a").await, "HIT");

    // By host: everything of that host, nothing of the other.
    assert_eq!(cache.purge(&PurgeScope::Host(docs.into())), 4);
    assert_eq!(status_of(port, docs, "/b").await, "MISS");
    assert_eq!(status_of(port, "wiki.example.com", "/a").await, "HIT");
    assert_eq!(cache.purge_host("nothing.example.com"), 0);
}
