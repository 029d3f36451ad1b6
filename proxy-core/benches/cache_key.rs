//! Cache key building on the hit path: the policy's primary key text plus pingora's hash.
//! Run with `cargo bench -p proxy-core --bench cache_key`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderName;
use pingora::cache::key::CacheHashKey;
use pingora::http::RequestHeader;
use proxy_core::cache::{CacheKeyPolicy, QueryKey};

fn request(uri: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", uri.as_bytes(), None).expect("valid request");
    req.insert_header("host", "docs.example.com")
        .expect("valid header");
    req.insert_header("accept-language", "fr-CH, fr;q=0.9")
        .expect("valid header");
    req
}

/// The key policy's defaults: scheme, host and the full query.
fn full() -> CacheKeyPolicy {
    CacheKeyPolicy {
        scheme: true,
        host: true,
        query: QueryKey::Full,
        headers: Vec::new(),
    }
}

fn bench_keys(c: &mut Criterion) {
    let req = request("/guide/install.html?b=2&a=1&utm_source=x");
    let cases = [
        ("full", full()),
        (
            "sorted",
            CacheKeyPolicy {
                query: QueryKey::Sorted,
                ..full()
            },
        ),
        (
            "allowlist+header",
            CacheKeyPolicy {
                query: QueryKey::Allow(vec!["a".into(), "b".into()]),
                headers: vec![HeaderName::from_static("accept-language")],
                ..full()
            },
        ),
    ];
    for (name, policy) in cases {
        c.bench_function(&format!("cache_key/{name}"), |b| {
            b.iter(|| {
                let key = policy.cache_key("http", "docs.example.com", black_box(&req));
                black_box(key.combined_bin())
            })
        });
    }
}

criterion_group!(benches, bench_keys);
criterion_main!(benches);
