//! Benchmark (ignored by default): proxy RSS before and after one million distinct client
//! IPs hit a rate-limited site. The rate-limit sketch has a fixed size, so growth must stay
//! under 16 MiB. Run with `benches/limits/run.sh` (release build, prints the numbers).

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Distinct clients sprayed; `LIMITS_BENCH_CLIENTS` overrides (for a quick check).
fn clients() -> u32 {
    std::env::var("LIMITS_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const CONNECTIONS: u32 = 32;
const WARM_UP: u32 = 20_000;

fn config(tailnet: &fake_tailnet::FakeTailnet) -> String {
    format!(
        r#"{base}
[client]
trusted_proxies = ["127.0.0.0/8"]

[rate_limits.site]
rate = "10r/s"
burst = 5

[sites.bench]
hosts = ["bench.example.com"]
rate_limits = ["site"]

[[sites.bench.locations]]
match = "/"
return = {{ status = 200, body = "ok\n" }}
"#,
        base = base_config(tailnet)
    )
}

/// Sends one request per client IP in `range`, over `CONNECTIONS` keep-alive connections;
/// returns how many answers were 200 (a spray of more simultaneously active addresses than
/// the zone has slots shares buckets, so some first requests are rejected: by design).
async fn spray(proxy: &Proxy, range: std::ops::Range<u32>) -> u64 {
    let per = (range.end - range.start).div_ceil(CONNECTIONS);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let start = range.start + c * per;
            let end = (start + per).min(range.end);
            let addr = proxy.addr;
            tokio::spawn(async move { one_connection(addr, start..end).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.expect("spray task");
    }
    ok
}

async fn one_connection(addr: std::net::SocketAddr, ips: std::ops::Range<u32>) -> u64 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut ok = 0;
    let mut buf = vec![0u8; 4096];
    for n in ips {
        let ip = Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n));
        let request =
            format!("GET / HTTP/1.1\r\nHost: bench.example.com\r\nFly-Client-IP: {ip}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        // Local answers are small: read until the body "ok\n" (or a 429 body) has arrived.
        while !(got.ends_with(b"ok\n") || got.ends_with(b"requests\n")) {
            let read = stream.read(&mut buf).await.expect("read");
            assert!(read > 0, "connection closed");
            got.extend_from_slice(&buf[..read]);
        }
        if got.starts_with(b"HTTP/1.1 200") {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: one million requests; run benches/limits/run.sh"]
async fn rss_stays_bounded_with_a_million_client_ips() {
    let tailnet = tailnet(&[]).await;
    let proxy = Proxy::start(&config(&tailnet));
    assert!(spray(&proxy, 0..WARM_UP).await > 0);
    let before = proxy.rss_kib();
    let clients = clients();
    let started = Instant::now();
    let ok = spray(&proxy, WARM_UP..WARM_UP + clients).await;
    let elapsed = started.elapsed();
    let after = proxy.rss_kib();
    let growth_kib = after.saturating_sub(before);
    println!(
        "{clients} distinct client IPs in {:.1}s ({:.0} req/s): RSS {before} KiB -> {after} KiB (growth {growth_kib} KiB, peak {} KiB), {ok} passed",
        elapsed.as_secs_f64(),
        f64::from(clients) / elapsed.as_secs_f64(),
        proxy.peak_rss_kib(),
    );
    assert!(growth_kib < 16 * 1024, "RSS grew by {growth_kib} KiB");
}
