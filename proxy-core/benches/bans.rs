//! The ban check every request pays before routing: no bans at all (one atomic load), a
//! client not banned among 100,000 bans, and a banned client (what its refused request
//! costs before the answer is written).
//! Run with `cargo bench -p proxy-core --bench bans`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use proxy_core::ban::BanTable;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

fn bench_bans(c: &mut Criterion) {
    let empty = BanTable::new(100_000, None);
    let client: IpAddr = "198.51.100.7".parse().expect("valid address");
    assert!(empty.banned(client).is_none());
    c.bench_function("bans/none_held", |b| {
        b.iter(|| empty.banned(black_box(client)))
    });

    let full = BanTable::new(100_000, None);
    let rule: Arc<str> = Arc::from("errors");
    for i in 0..100_000u32 {
        let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        full.ban(ip, Duration::from_secs(3600), &rule);
    }
    let banned: IpAddr = "10.0.1.2".parse().expect("valid address");
    assert!(full.banned(client).is_none() && full.banned(banned).is_some());
    c.bench_function("bans/miss_among_100k", |b| {
        b.iter(|| full.banned(black_box(client)))
    });
    c.bench_function("bans/hit_among_100k", |b| {
        b.iter(|| full.banned(black_box(banned)))
    });
    let banned_v6: IpAddr = "2001:db8:1:2::5".parse().expect("valid address");
    full.ban(banned_v6, Duration::from_secs(3600), &rule);
    c.bench_function("bans/hit_v6_among_100k", |b| {
        b.iter(|| full.banned(black_box(banned_v6)))
    });
}

criterion_group!(benches, bench_bans);
criterion_main!(benches);
