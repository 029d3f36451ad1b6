//! Client-IP extraction on the request path: `Fly-Client-IP` believed from a trusted peer
//! (IPv4 and IPv6 clients), the same header ignored from an untrusted peer (the peer is the
//! client), and the `X-Forwarded-For` fallback when a trusted peer sent no client-IP header.
//! The policy trusts `172.16.0.0/12`, as the Fly.io config does; requests carry the usual
//! browser headers.
//! Run with `cargo bench -p proxy-core --bench client_ip`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use proxy_core::client::ClientIpPolicy;
use std::net::IpAddr;

fn request(extra: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/guide/install.html", None).expect("valid request");
    let common = [
        ("host", "docs.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "fr-CH, fr;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("fly-forwarded-port", "443"),
        ("fly-region", "ams"),
    ];
    for (name, value) in common.iter().chain(extra) {
        req.append_header(name.to_string(), *value)
            .expect("valid header");
    }
    req
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn bench_client_ip(c: &mut Criterion) {
    let trusted: Vec<_> = ["172.16.0.0/12"]
        .iter()
        .map(|net| net.parse().expect("valid CIDR"))
        .collect();
    let header = http::HeaderName::from_static("fly-client-ip");
    let policy = ClientIpPolicy::new(trusted.clone(), header.clone(), false);
    let with_fallback = ClientIpPolicy::new(trusted, header, true);
    let fly_peer = ip("172.19.0.2");
    // (bench name, policy, peer, request, the client that must be found)
    let cases = [
        (
            "trusted",
            &policy,
            fly_peer,
            request(&[("fly-client-ip", "203.0.113.9")]),
            "203.0.113.9",
        ),
        (
            "trusted_v6",
            &policy,
            fly_peer,
            request(&[("fly-client-ip", "2001:db8:85a3::8a2e:370:7334")]),
            "2001:db8:85a3::8a2e:370:7334",
        ),
        (
            "untrusted",
            &policy,
            ip("198.51.100.1"),
            request(&[("fly-client-ip", "203.0.113.9")]),
            "198.51.100.1",
        ),
        (
            "xff_fallback",
            &with_fallback,
            fly_peer,
            request(&[("x-forwarded-for", "203.0.113.9, 172.20.0.5")]),
            "203.0.113.9",
        ),
    ];
    let mut group = c.benchmark_group("client_ip");
    for (name, policy, peer, req, expected) in &cases {
        assert_eq!(
            policy.client_ip(Some(*peer), &req.headers),
            Some(ip(expected)),
            "{name}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| policy.client_ip(black_box(Some(*peer)), black_box(&req.headers)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_client_ip);
criterion_main!(benches);
