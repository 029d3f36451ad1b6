//! Cache purge from the admin listener: behind the bearer token, never on the public port.

mod common;

use common::*;
use std::net::SocketAddr;

async fn admin_post(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().post(format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = Reply::read(request.send().await.expect("admin request")).await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn purge_by_url_and_host_through_the_admin_listener() {
    let tailnet = tailnet(&["docs"]).await;
    let variable = format!("PURGE_TEST_TOKEN_{}", std::process::id());
    std::env::set_var(&variable, "s3cret-token");
    let config = format!(
        "{}\n[upstreams.docs]\naddress = \"docs.{}:{}\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\ncache = {{ valid = {{ \"200\" = \"1h\" }}, ignore_cache_control = true }}\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n",
        base_config(&tailnet).replace(
            "[admin]\nlisten = \"127.0.0.1:",
            &format!("[admin]\ntoken_env = \"{variable}\"\nlisten = \"127.0.0.1:"),
        ),
        tailnet.domain(),
        tailnet.http_port()
    );
    let proxy = Edge::start(&config);
    let admin = proxy.admin_addr;
    let peer = tailnet.peer("docs").unwrap();
    for path in ["/a", "/a", "/b", "/b"] {
        get(&proxy, "docs.example.com", path).await;
    }
    assert_eq!(peer.requests(), 2, "second requests were hits");

    assert_eq!(
        admin_post(admin, "/admin/purge?host=docs.example.com&path=/a", None)
            .await
            .0,
        401
    );
    assert_eq!(
        admin_post(
            admin,
            "/admin/purge?host=docs.example.com&path=/a",
            Some("wrong")
        )
        .await
        .0,
        401
    );
    // On the public port the same path is just a request for the site (proxied, uncached).
    client()
        .post(proxy.url("/admin/purge?host=docs.example.com"))
        .header("host", "docs.example.com")
        .send()
        .await
        .unwrap();
    let after_public = peer.requests();
    get(&proxy, "docs.example.com", "/a").await;
    assert_eq!(
        peer.requests(),
        after_public,
        "the public port purged nothing: /a is still a hit"
    );

    let (status, body) = admin_post(
        admin,
        "/admin/purge?host=docs.example.com&path=/a",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!((status, body.trim()), (200, "{\"purged\":1}"));
    get(&proxy, "docs.example.com", "/a").await;
    get(&proxy, "docs.example.com", "/b").await;
    assert_eq!(peer.requests(), after_public + 1, "only /a was purged");

    let (status, body) = admin_post(
        admin,
        "/admin/purge?host=DOCS.example.com",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!((status, body.trim()), (200, "{\"purged\":2}"));
    get(&proxy, "docs.example.com", "/b").await;
    assert_eq!(peer.requests(), after_public + 2);
    assert_eq!(
        admin_post(admin, "/admin/purge", Some("s3cret-token"))
            .await
            .0,
        400
    );
}
