//! Response caching end to end: keys, freshness, bypass, Vary, HEAD, stale serving, the
//! cache lock and the memory bound, against fake peers that count requests.

mod common;

use common::*;
use fake_tailnet::FakeTailnet;
use std::time::Duration;

/// One site (`docs.example.com` and `wiki.example.com`) proxying to the `docs` peer, with
/// `site_cache` as the site's cache policy, `locations` appended, and `storage` (a `[cache]`
/// section, or "") before it.
fn config(tailnet: &FakeTailnet, storage: &str, site_cache: &str, locations: &str) -> String {
    format!(
        r#"{base}
{storage}

[upstreams.docs]
address = "docs.{d}:{p}"

[sites.docs]
hosts = ["docs.example.com", "wiki.example.com"]
cache = {{ {site_cache} }}

[[sites.docs.locations]]
match = "/"
proxy = "docs"
{locations}
"#,
        base = base_config(tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port(),
    )
}

async fn start(storage: &str, site_cache: &str, locations: &str) -> (FakeTailnet, Edge) {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Edge::start(&config(&tailnet, storage, site_cache, locations));
    (tailnet, proxy)
}

fn requests(tailnet: &FakeTailnet) -> u64 {
    tailnet.peer("docs").map_or(0, |p| p.requests())
}

/// Sends a request with extra headers; returns the reply.
async fn send(
    proxy: &Edge,
    method: reqwest::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client()
        .request(method, proxy.url(path))
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.expect("request through the proxy")).await
}

/// The `X-Cache-Status` of a GET.
async fn status_of(proxy: &Edge, host: &str, path: &str) -> String {
    let reply = get(proxy, host, path).await;
    reply.header("x-cache-status").unwrap_or("-").to_string()
}

#[tokio::test]
async fn second_request_is_a_hit() {
    let (tailnet, proxy) = start("", "", "").await;
    let first = get(&proxy, "docs.example.com", "/page").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    let second = get(&proxy, "docs.example.com", "/page").await;
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(requests(&tailnet), 1);
}

#[tokio::test]
async fn two_hosts_never_share_entries() {
    let (tailnet, proxy) = start("", "", "").await;
    assert_eq!(status_of(&proxy, "docs.example.com", "/same").await, "MISS");
    assert_eq!(status_of(&proxy, "wiki.example.com", "/same").await, "MISS");
    assert_eq!(status_of(&proxy, "wiki.example.com", "/same").await, "HIT");
    assert_eq!(requests(&tailnet), 2);
}

#[tokio::test]
async fn query_none_shares_one_entry_and_full_does_not() {
    let locations = r#"
[[sites.docs.locations]]
match = "/none/"
proxy = "docs"
cache = { key_query = "none" }
"#;
    let (tailnet, proxy) = start("", "", locations).await;
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/none/a?x=1").await,
        "MISS"
    );
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/none/a?x=2").await,
        "HIT"
    );
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/full?x=1").await,
        "MISS"
    );
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/full?x=2").await,
        "MISS"
    );
    assert_eq!(requests(&tailnet), 3);
}

#[tokio::test]
async fn set_cookie_is_not_cached_by_default_and_stripped_when_ignored() {
    let locations = r#"
[[sites.docs.locations]]
match = "/ignored/"
proxy = "docs"
cache = { ignore_set_cookie = true }
"#;
    let (tailnet, proxy) = start("[cache]\nmax_object_size = \"16k\"", "", locations).await;
    let cookie = "?header=Set-Cookie:id%3Dalice";
    for _ in 0..2 {
        let reply = get(&proxy, "docs.example.com", &format!("/default{cookie}")).await;
        assert_eq!(reply.header("x-cache-status"), Some("MISS"));
        assert_eq!(reply.header("set-cookie"), Some("id=alice"));
    }
    assert_eq!(requests(&tailnet), 2);
    let path = format!("/ignored/x{cookie}");
    let first = get(&proxy, "docs.example.com", &path).await;
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    // The visitor who caused the fetch still gets their cookie...
    assert_eq!(first.header("set-cookie"), Some("id=alice"));
    // ...but nobody else does.
    let second = get(&proxy, "docs.example.com", &path).await;
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.header("set-cookie"), None);
    assert_eq!(requests(&tailnet), 3);
    // Too large to store: proxied as is, with exactly one cookie.
    let big = get(
        &proxy,
        "docs.example.com",
        &format!("/ignored/big{cookie}&size=65536"),
    )
    .await;
    let cookies: Vec<_> = big.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
}

#[tokio::test]
async fn hundred_concurrent_misses_make_one_upstream_request() {
    let (tailnet, proxy) = start("", "lock = true", "").await;
    let client = client();
    let url = proxy.url("/slow?delay_ms=500");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let request = client.get(&url).header("host", "docs.example.com");
            tokio::spawn(async move { Reply::read(request.send().await.expect("send")).await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.expect("join");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "hello from docs\n");
    }
    assert_eq!(requests(&tailnet), 1);
}

#[tokio::test]
async fn authorization_bypasses_by_default_and_configured_bypasses_apply() {
    let (tailnet, proxy) = start(
        "",
        "bypass_cookies = [\"session\"], bypass_query = [\"nocache\"]",
        "",
    )
    .await;
    let auth = [("authorization", "Bearer secret")];
    for _ in 0..2 {
        let reply = send(
            &proxy,
            reqwest::Method::GET,
            "docs.example.com",
            "/private",
            &auth,
        )
        .await;
        assert_eq!(reply.header("x-cache-status"), Some("BYPASS"));
    }
    let cookie = [("cookie", "theme=dark; session=abc")];
    let reply = send(
        &proxy,
        reqwest::Method::GET,
        "docs.example.com",
        "/c",
        &cookie,
    )
    .await;
    assert_eq!(reply.header("x-cache-status"), Some("BYPASS"));
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/q?nocache=1").await,
        "BYPASS"
    );
    assert_eq!(requests(&tailnet), 4);
    // A bypassed request did not fill the cache either.
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/private").await,
        "MISS"
    );
}

#[tokio::test]
async fn head_is_served_from_the_get_entry() {
    let (tailnet, proxy) = start("", "", "").await;
    assert_eq!(status_of(&proxy, "docs.example.com", "/h").await, "MISS");
    let head = send(&proxy, reqwest::Method::HEAD, "docs.example.com", "/h", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-cache-status"), Some("HIT"));
    assert!(head.body.is_empty());
    assert_eq!(requests(&tailnet), 1);
}

/// Fresh hits are answered from memory in the request phase; they must look exactly like
/// pingora-cache's hits: `Age`, length, request id, and ranges and validators still work.
#[tokio::test]
async fn fresh_hits_keep_age_length_request_id_ranges_and_validators() {
    let (tailnet, proxy) = start("", "", "").await;
    let path = "/fast?header=ETag:%22v7%22";
    let host = "docs.example.com";
    let get = |headers: &'static [(&'static str, &'static str)]| {
        send(&proxy, reqwest::Method::GET, host, path, headers)
    };
    let first = get(&[]).await;
    assert_eq!(first.header("x-cache-status"), Some("MISS"));

    let hit = get(&[("x-request-id", "fast-1")]).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-cache-status"), Some("HIT"));
    assert_eq!(hit.body, first.body);
    assert!(hit
        .header("age")
        .is_some_and(|age| age.parse::<u64>().is_ok()));
    assert_eq!(hit.header("etag"), Some("\"v7\""));
    assert_eq!(hit.header("x-request-id"), Some("fast-1"));
    let length = first.body.len().to_string();
    assert_eq!(hit.header("content-length"), Some(length.as_str()));

    // Later hits start from a header prepared by the first: every value is this request's.
    let again = get(&[("x-request-id", "fast-2")]).await;
    assert_eq!(again.header("x-request-id"), Some("fast-2"));
    for name in [
        "x-cache-status",
        "x-request-id",
        "age",
        "date",
        "connection",
    ] {
        let values: Vec<_> = again.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        assert!(!values[0].is_empty(), "{name} is empty");
    }
    assert_eq!(again.header("connection"), Some("keep-alive"));
    let date = httpdate::parse_http_date(again.header("date").unwrap()).unwrap();
    let skew = std::time::SystemTime::now()
        .duration_since(date)
        .unwrap_or_default();
    assert!(
        skew < std::time::Duration::from_secs(5),
        "Date is {skew:?} old"
    );

    let head = send(&proxy, reqwest::Method::HEAD, host, path, &[]).await;
    assert_eq!(head.header("x-cache-status"), Some("HIT"));
    assert!(head.header("x-request-id").is_some_and(|id| !id.is_empty()));
    assert_eq!(head.header("content-length"), Some(length.as_str()));
    assert!(head.body.is_empty());

    let range = get(&[("range", "bytes=0-4")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, first.body[..5]);
    assert_eq!(range.header("x-cache-status"), Some("HIT"));

    let validated = get(&[("if-none-match", "\"v7\"")]).await;
    assert_eq!(validated.status, 304);
    assert!(validated.body.is_empty());

    assert_eq!(requests(&tailnet), 1);
}

/// The head of a response on `stream`, up to its blank line (for a `HEAD`, which has no body).
fn read_head(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A response head's fields as written, in order: (lowercase name, value).
fn fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect()
}

/// A fresh GET hit is written from the head kept with its entry, serialized once; a `HEAD`
/// hit's head is built field by field. Both must say the same: the same fields in the same
/// order with the same values, but for this moment's `Date` and `Age` and this request's id,
/// and the `Connection` the client asked for.
#[tokio::test]
async fn a_hit_written_from_its_kept_head_says_what_one_built_field_by_field_does() {
    use std::io::{Read, Write};
    let (tailnet, proxy) = start("", "", "").await;
    let host = "docs.example.com";
    let path = "/kept?header=ETag:%22k1%22&header=X-Served-By:docs";
    let first = get(&proxy, host, path).await;
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    let addr = proxy.addr();
    let (gets, head, closing, closed) = tokio::task::spawn_blocking(move || {
        let mut stream = raw_connection(addr);
        let mut gets = Vec::new();
        for id in ["kept-1", "kept-2"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: {id}\r\n\r\n");
            stream.write_all(request.as_bytes()).unwrap();
            gets.push(read_response(&mut stream));
        }
        let request = format!("HEAD {path} HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: kept-3\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let head = read_head(&mut stream);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: kept-4\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let closing = read_response(&mut stream);
        let closed = matches!(stream.read(&mut [0u8; 1]), Ok(0));
        (gets, head, closing, closed)
    })
    .await
    .unwrap();

    let built = fields(&head);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let names = |fields: &[(String, String)]| -> Vec<String> {
        fields.iter().map(|(name, _)| name.clone()).collect()
    };
    let moment = ["date", "age", "x-request-id"];
    for (response, id, connection) in [
        (&gets[0], "kept-1", "keep-alive"),
        (&gets[1], "kept-2", "keep-alive"),
        (&closing, "kept-4", "close"),
    ] {
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with(&first.body), "{response}");
        let (head, _) = response.split_once("\r\n\r\n").unwrap();
        let kept = fields(head);
        assert_eq!(names(&kept), names(&built), "{response}");
        for ((name, value), (_, built_value)) in kept.iter().zip(&built) {
            match name.as_str() {
                "x-request-id" => assert_eq!(value, id),
                "connection" => assert_eq!(value, connection),
                name if moment.contains(&name) => assert!(!value.is_empty()),
                _ => assert_eq!(value, built_value, "{name}"),
            }
        }
    }
    assert!(fields(&head).contains(&("x-request-id".into(), "kept-3".into())));
    assert!(fields(&head).contains(&("x-served-by".into(), "docs".into())));
    assert!(fields(&head).contains(&("x-cache-status".into(), "HIT".into())));
    assert!(
        closed,
        "the connection stays open after `Connection: close`"
    );
    assert_eq!(requests(&tailnet), 1);
}

#[tokio::test]
async fn a_head_miss_never_stores_an_empty_body_for_get() {
    let (tailnet, proxy) = start("", "", "").await;
    let head = send(
        &proxy,
        reqwest::Method::HEAD,
        "docs.example.com",
        "/hf",
        &[],
    )
    .await;
    assert_eq!(head.header("x-cache-status"), Some("MISS"));
    let first = get(&proxy, "docs.example.com", "/hf").await;
    assert_eq!(first.body, "hello from docs\n");
    let second = get(&proxy, "docs.example.com", "/hf").await;
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.body, "hello from docs\n");
    assert_eq!(requests(&tailnet), 2);
}

#[tokio::test]
async fn vary_is_honoured_and_vary_star_is_not_cached() {
    let (tailnet, proxy) = start("", "", "").await;
    let path = "/v?header=Vary:Accept-Language";
    for (lang, expected) in [("fr", "MISS"), ("en", "MISS"), ("fr", "HIT"), ("en", "HIT")] {
        let headers = [("accept-language", lang)];
        let reply = send(
            &proxy,
            reqwest::Method::GET,
            "docs.example.com",
            path,
            &headers,
        )
        .await;
        assert_eq!(reply.header("x-cache-status"), Some(expected), "{lang}");
    }
    assert_eq!(requests(&tailnet), 2);
    for _ in 0..2 {
        assert_eq!(
            status_of(&proxy, "docs.example.com", "/star?header=Vary:*").await,
            "MISS"
        );
    }
    assert_eq!(requests(&tailnet), 4);
}

#[tokio::test]
async fn per_status_ttls_and_origin_cache_control() {
    let locations = r#"
[[sites.docs.locations]]
match = "/ignore/"
proxy = "docs"
cache = { ignore_cache_control = true }
"#;
    let (tailnet, proxy) = start("", r#"valid = { "200" = "1d", "404" = "1m" }"#, locations).await;
    let host = "docs.example.com";
    assert_eq!(status_of(&proxy, host, "/nf?status=404").await, "MISS");
    assert_eq!(status_of(&proxy, host, "/nf?status=404").await, "HIT");
    assert_eq!(status_of(&proxy, host, "/err?status=500").await, "MISS");
    assert_eq!(status_of(&proxy, host, "/err?status=500").await, "MISS");
    assert_eq!(requests(&tailnet), 3);
    let no_store = "?header=Cache-Control:no-store";
    assert_eq!(
        status_of(&proxy, host, &format!("/cc{no_store}")).await,
        "MISS"
    );
    assert_eq!(
        status_of(&proxy, host, &format!("/cc{no_store}")).await,
        "MISS"
    );
    assert_eq!(
        status_of(&proxy, host, &format!("/ignore/cc{no_store}")).await,
        "MISS"
    );
    assert_eq!(
        status_of(&proxy, host, &format!("/ignore/cc{no_store}")).await,
        "HIT"
    );
    assert_eq!(requests(&tailnet), 6);
}

#[tokio::test]
async fn larger_than_max_object_size_is_proxied_not_cached() {
    let (tailnet, proxy) = start("[cache]\nmax_object_size = \"16k\"", "", "").await;
    for _ in 0..2 {
        let reply = get(&proxy, "docs.example.com", "/big?size=65536").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 65536);
        assert_eq!(reply.header("x-cache-status"), Some("MISS"));
    }
    assert_eq!(requests(&tailnet), 2);
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/small?size=1024").await,
        "MISS"
    );
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/small?size=1024").await,
        "HIT"
    );
}

#[tokio::test]
async fn memory_bound_holds_after_writing_three_times_max_size() {
    let (tailnet, proxy) = start("[cache]\nmax_size = \"256k\"", "", "").await;
    let objects = 3 * 256 / 32;
    let path = |i: usize| format!("/obj/{i}?size=32768");
    for i in 0..objects {
        assert_eq!(
            status_of(&proxy, "docs.example.com", &path(i)).await,
            "MISS"
        );
    }
    // HEAD hits are served from the cache and HEAD misses are never stored, so counting
    // HEAD hits measures what is held without changing it. At most 256k / 32k entries fit;
    // eviction purges run in the background, so allow them a moment.
    let mut held = usize::MAX;
    for _ in 0..50 {
        held = 0;
        for i in 0..objects {
            let reply = send(
                &proxy,
                reqwest::Method::HEAD,
                "docs.example.com",
                &path(i),
                &[],
            )
            .await;
            held += usize::from(reply.header("x-cache-status") == Some("HIT"));
        }
        if held <= 256 / 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        held <= 256 / 32,
        "{held} objects of 32k held in a 256k cache"
    );
    assert!(held > 0, "the cache still holds recent objects");
    assert!(requests(&tailnet) >= objects as u64);
}

#[tokio::test]
async fn stale_is_served_when_the_peer_is_down_within_the_window_and_not_after() {
    let (tailnet, proxy) =
        start("", r#"valid = { "200" = "1s" }, stale_if_error = "3s""#, "").await;
    assert_eq!(status_of(&proxy, "docs.example.com", "/s").await, "MISS");
    // Let the entry expire (whole seconds), then take the peer down.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    tailnet.peer("docs").expect("peer").stop();
    let stale = get(&proxy, "docs.example.com", "/s").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache-status"), Some("STALE"));
    assert_eq!(stale.body, "hello from docs\n");
    let mut status = 0;
    for _ in 0..100 {
        status = get(&proxy, "docs.example.com", "/s").await.status;
        if status == 502 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 502,
        "past the stale-if-error window the error shows"
    );
}

#[tokio::test]
async fn stale_is_served_for_configured_upstream_statuses_only() {
    let locations = r#"
[[sites.docs.locations]]
match = "/strict/"
proxy = "docs"
cache = { stale_if_error_statuses = [503] }
"#;
    let (tailnet, proxy) = start(
        "",
        r#"valid = { "200" = "1s" }, stale_if_error = "1h""#,
        locations,
    )
    .await;
    let host = "docs.example.com";
    assert_eq!(status_of(&proxy, host, "/five").await, "MISS");
    assert_eq!(status_of(&proxy, host, "/strict/five").await, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let peer = tailnet.peer("docs").expect("peer").clone();
    peer.set_response(fake_tailnet::ResponseSpec {
        status: 500,
        ..fake_tailnet::ResponseSpec::default()
    });
    let stale = get(&proxy, host, "/five").await;
    assert_eq!(
        (stale.status, stale.header("x-cache-status")),
        (200, Some("STALE"))
    );
    let strict = get(&proxy, host, "/strict/five").await;
    assert_eq!(strict.status, 500, "500 is not in this location's list");
}

#[tokio::test]
async fn stale_while_revalidate_refreshes_in_the_background_once() {
    let (tailnet, proxy) = start(
        "",
        r#"valid = { "200" = "1s" }, stale_while_revalidate = "1m", background_update = true"#,
        "",
    )
    .await;
    assert_eq!(status_of(&proxy, "docs.example.com", "/swr").await, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/swr").await,
        "UPDATING"
    );
    assert!(
        eventually(Duration::from_secs(10), || requests(&tailnet) == 2).await,
        "the peer sees one background refresh"
    );
    // The peer sees the refresh before the edge has stored its answer: until then the
    // stale copy is served (UPDATING), never a second refresh.
    let mut status = String::new();
    for _ in 0..100 {
        status = status_of(&proxy, "docs.example.com", "/swr").await;
        if status != "UPDATING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "HIT");
    assert_eq!(requests(&tailnet), 2);
}

/// nginx's `proxy_cache_use_stale updating` without `proxy_cache_background_update`: the
/// request that finds the entry expired fetches it and waits (EXPIRED); the others get the
/// stale copy at once meanwhile (UPDATING), even where the lock is off for misses.
#[tokio::test]
async fn while_one_request_refreshes_an_expired_entry_the_others_get_it_stale() {
    let (tailnet, proxy) = start(
        "",
        r#"valid = { "200" = "1s" }, stale_while_revalidate = "1m", key_query = "none""#,
        "",
    )
    .await;
    let host = "docs.example.com";
    assert_eq!(status_of(&proxy, host, "/u").await, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refresh = client()
        .get(proxy.url("/u?delay_ms=2000"))
        .header("host", host)
        .send();
    let refresh = tokio::spawn(async move { Reply::read(refresh.await.expect("send")).await });
    assert!(
        eventually(Duration::from_secs(10), || requests(&tailnet) == 2).await,
        "the refresh reached the peer"
    );
    let meanwhile = get(&proxy, host, "/u").await;
    assert_eq!(meanwhile.header("x-cache-status"), Some("UPDATING"));
    assert_eq!(meanwhile.body, "hello from docs\n");
    let refreshed = refresh.await.expect("join");
    assert_eq!(
        refreshed.header("x-cache-status"),
        Some("EXPIRED"),
        "it waited"
    );
    assert_eq!(status_of(&proxy, host, "/u").await, "HIT");
    assert_eq!(requests(&tailnet), 2, "one refresh");
}

/// nginx's `proxy_cache_lock` is per location and off by default.
#[tokio::test]
async fn the_cache_lock_is_a_per_location_choice() {
    let locations = r#"
[[sites.docs.locations]]
match = "/free/"
proxy = "docs"
cache = { lock = false }
"#;
    let (tailnet, proxy) = start("", "lock = true", locations).await;
    let client = client();
    let together = |path: &'static str| {
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let request = client
                    .get(proxy.url(path))
                    .header("host", "docs.example.com");
                tokio::spawn(async move { request.send().await.expect("send").status() })
            })
            .collect();
        futures_util::future::join_all(tasks)
    };
    for status in together("/locked?delay_ms=1000").await {
        assert_eq!(status.expect("join"), 200);
    }
    assert_eq!(requests(&tailnet), 1, "the site's lock: one fetch");
    // A slower origin here: every one of the five must arrive while the first is still
    // being fetched (one arriving after the fill would be a hit), also on a busy machine.
    for status in together("/free/x?delay_ms=3000").await {
        assert_eq!(status.expect("join"), 200);
    }
    assert_eq!(requests(&tailnet), 6, "no lock here: each miss fetches");
}

#[tokio::test]
async fn status_header_can_be_renamed_or_turned_off() {
    let locations = r#"
[[sites.docs.locations]]
match = "/quiet/"
proxy = "docs"
cache = { status_header = "" }
"#;
    let (_tailnet, proxy) = start("", "status_header = \"X-Edge-Cache\"", locations).await;
    let reply = get(&proxy, "docs.example.com", "/loud").await;
    assert_eq!(reply.header("x-edge-cache"), Some("MISS"));
    assert_eq!(reply.header("x-cache-status"), None);
    let quiet = get(&proxy, "docs.example.com", "/quiet/x").await;
    assert_eq!(quiet.header("x-edge-cache"), None);
    assert_eq!(quiet.header("x-cache-status"), None);
}

#[tokio::test]
async fn locations_without_cache_are_not_cached() {
    let tailnet = tailnet(&["docs"]).await;
    let text = format!(
        r#"{base}
[upstreams.docs]
address = "docs.{d}:{p}"
[sites.docs]
hosts = ["docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "docs"
"#,
        base = base_config(&tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port(),
    );
    let proxy = Edge::start(&text);
    for _ in 0..2 {
        let reply = get(&proxy, "docs.example.com", "/").await;
        assert_eq!(reply.header("x-cache-status"), None);
    }
    assert_eq!(requests(&tailnet), 2);
}

#[tokio::test]
async fn expired_entry_without_validators_is_fetched_again() {
    let (tailnet, proxy) = start("", r#"valid = { "200" = "1s" }"#, "").await;
    assert_eq!(status_of(&proxy, "docs.example.com", "/e").await, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status_of(&proxy, "docs.example.com", "/e").await, "EXPIRED");
    assert_eq!(status_of(&proxy, "docs.example.com", "/e").await, "HIT");
    assert_eq!(requests(&tailnet), 2);
}

#[tokio::test]
async fn expired_entry_is_revalidated_with_its_etag() {
    let (tailnet, proxy) = start("", r#"valid = { "200" = "1s" }"#, "").await;
    let peer = tailnet.peer("docs").expect("peer").clone();
    let etag = ("ETag".to_string(), "\"v1\"".to_string());
    peer.set_response(fake_tailnet::ResponseSpec {
        headers: vec![etag.clone()],
        ..fake_tailnet::ResponseSpec::default()
    });
    assert_eq!(status_of(&proxy, "docs.example.com", "/r").await, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    peer.set_response(fake_tailnet::ResponseSpec {
        status: 304,
        headers: vec![etag],
        ..fake_tailnet::ResponseSpec::default()
    });
    let reply = get(&proxy, "docs.example.com", "/r").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-cache-status"), Some("REVALIDATED"));
    assert_eq!(reply.body, "hello from docs\n");
    let seen = peer.last_request().expect("a revalidation request");
    assert_eq!(seen.header("if-none-match"), Some("\"v1\""));
    assert_eq!(status_of(&proxy, "docs.example.com", "/r").await, "HIT");
}

#[tokio::test]
async fn lock_timeout_sends_waiters_upstream_themselves() {
    let (tailnet, proxy) = start("[cache]\nlock_timeout = \"200ms\"", "lock = true", "").await;
    let client = client();
    let url = proxy.url("/locked?delay_ms=2000");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let request = client.get(&url).header("host", "docs.example.com");
            tokio::spawn(async move { Reply::read(request.send().await.expect("send")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("join").status, 200);
    }
    assert_eq!(
        requests(&tailnet),
        3,
        "waiters gave up on the lock and fetched"
    );
}

fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|items| {
            items
                .filter_map(|item| item.ok().map(|i| i.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "entry"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn disk_tier_survives_a_restart_and_rejects_a_corrupted_file() {
    let tailnet = tailnet(&["docs"]).await;
    let disk = tempfile::tempdir().expect("temp dir");
    let storage = format!(
        "[cache]\n[cache.disk]\npath = \"{}\"\nmax_size = \"10m\"",
        disk.path().display()
    );
    let text = config(&tailnet, &storage, "", "");
    let proxy = Edge::start(&text);
    assert_eq!(status_of(&proxy, "docs.example.com", "/keep").await, "MISS");
    assert_eq!(
        status_of(&proxy, "docs.example.com", "/spoil").await,
        "MISS"
    );
    assert!(
        eventually(Duration::from_secs(10), || entry_files(disk.path()).len()
            == 2)
        .await,
        "both entries written to disk"
    );
    drop(proxy);

    let proxy = Edge::start(&text);
    let kept = get(&proxy, "docs.example.com", "/keep").await;
    assert_eq!(kept.header("x-cache-status"), Some("HIT"));
    assert_eq!(kept.body, "hello from docs\n");
    assert_eq!(requests(&tailnet), 2);
    drop(proxy);

    // Damage every entry file: flip a byte in the middle.
    for path in entry_files(disk.path()) {
        let mut bytes = std::fs::read(&path).expect("read entry file");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        std::fs::write(&path, bytes).expect("write entry file");
    }
    let proxy = Edge::start(&text);
    for path in ["/keep", "/spoil"] {
        let reply = get(&proxy, "docs.example.com", path).await;
        assert_eq!(reply.header("x-cache-status"), Some("MISS"), "{path}");
        assert_eq!(reply.body, "hello from docs\n");
    }
    assert_eq!(requests(&tailnet), 4);
}

#[tokio::test]
async fn unusable_disk_path_degrades_to_memory_caching() {
    let tailnet = tailnet(&["docs"]).await;
    let blocker = tempfile::NamedTempFile::new().expect("temp file");
    // A directory cannot be created below a regular file.
    let storage = format!(
        "[cache]\n[cache.disk]\npath = \"{}/cache\"",
        blocker.path().display()
    );
    let proxy = Edge::start(&config(&tailnet, &storage, "", ""));
    assert_eq!(status_of(&proxy, "docs.example.com", "/d").await, "MISS");
    assert_eq!(status_of(&proxy, "docs.example.com", "/d").await, "HIT");
    assert!(proxy.logs().contains("cache disk tier unavailable"));
}
