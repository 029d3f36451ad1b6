//! The rate-limit decision (nginx `limit_req` semantics): deriving the client's key and
//! deciding under the zone's lock, for one hot client that is allowed, one client over its
//! burst that is rejected, and 10,000 distinct clients in turn. The zone is the config's
//! default shape (`rate = "10r/s"`, `burst = 20`, keyed by client IP, 16384 slots).
//!
//! These cases run on a simulated clock (`LimitZone::acquire_at`), so each one keeps the
//! same outcome however fast the machine is: the allowed client arrives exactly at the
//! rate, and the 10,000 clients each at the rate too. `acquire_all/reject` goes through
//! `acquire_all` with a site zone and a location zone on the real clock, as the guards do;
//! at benchmark speed every client is over its burst there, so it measures rejections.
//!
//! Run with `cargo bench -p proxy-core --bench rate_limit`.

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion};
use proxy_core::config::file::DEFAULT_SLOTS;
use proxy_core::limit::{
    acquire_all, LimitOutcome, LimitZone, Rate, ZoneKey, ZoneScope, ZoneSettings, ZoneVerdict,
};
use std::net::{IpAddr, Ipv4Addr};

const SECOND: i64 = 1_000_000_000;

fn zone(name: &str, rate: &str, burst: u32, key: ZoneKey) -> LimitZone {
    scoped(name, rate, burst, key, ZoneScope::Local)
}

fn scoped(name: &str, rate: &str, burst: u32, key: ZoneKey, scope: ZoneScope) -> LimitZone {
    LimitZone::new(ZoneSettings {
        name: name.into(),
        rate: Rate::parse(rate).expect("valid rate"),
        burst,
        delay: None,
        key,
        ipv6_prefix: 64,
        status: 429,
        dry_run: false,
        slots: DEFAULT_SLOTS,
        scope,
    })
}

/// No header-keyed zone here, so no header is ever asked for.
fn no_header(_: &http::HeaderName) -> Option<&'static [u8]> {
    None
}

/// The location every key is derived for.
const LOCATION: (&str, usize) = ("docs", 0);
/// The one hot client.
const CLIENT: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
/// Clients taking turns in the `distinct` cases.
const CLIENTS: u32 = 10_000;

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// `name`: the hot client arriving exactly at the zone's rate (every request passes).
fn bench_at_rate(group: &mut Group<'_>, name: &str, z: &LimitZone, interval: i64) {
    let mut now = SECOND;
    group.bench_function(name, |b| {
        b.iter(|| {
            now += interval;
            let key = z
                .key_for(black_box(CLIENT), no_header, LOCATION)
                .expect("key");
            z.acquire_at(&key, now, &z.settings.default_use())
        })
    });
    assert_eq!(
        z.rejected_total(),
        0,
        "the client at the rate always passes"
    );
}

/// `name`: [`CLIENTS`] clients take turns, each arriving once per interval, i.e. at the
/// zone's rate; returns the rejections.
fn bench_distinct(group: &mut Group<'_>, name: &str, z: &LimitZone, interval: i64) -> u64 {
    let step = interval / i64::from(CLIENTS);
    let first = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let (mut n, mut now) = (0u32, SECOND);
    group.bench_function(name, |b| {
        b.iter(|| {
            n = (n + 1) % CLIENTS;
            now += step;
            let ip = Some(IpAddr::V4(Ipv4Addr::from(first + n)));
            let key = z.key_for(black_box(ip), no_header, LOCATION).expect("key");
            z.acquire_at(&key, now, &z.settings.default_use())
        })
    });
    z.rejected_total()
}

fn bench_decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit");
    let interval = Rate::parse("10r/s")
        .expect("valid rate")
        .emission_interval_ns();

    bench_at_rate(
        &mut group,
        "pass",
        &zone("site", "10r/s", 20, ZoneKey::ClientIp),
        interval,
    );

    let z = zone("site", "10r/s", 20, ZoneKey::ClientIp);
    let key = z.key_for(CLIENT, no_header, LOCATION).expect("key");
    for _ in 0..21 {
        assert!(matches!(
            z.acquire_at(&key, SECOND, &z.settings.default_use()),
            ZoneVerdict::Pass { .. }
        ));
    }
    group.bench_function("reject", |b| {
        b.iter(|| {
            let key = z
                .key_for(black_box(CLIENT), no_header, LOCATION)
                .expect("key");
            z.acquire_at(&key, SECOND, &z.settings.default_use())
        })
    });
    assert!(matches!(
        z.acquire_at(&key, SECOND, &z.settings.default_use()),
        ZoneVerdict::Reject { .. }
    ));

    let z = zone("site", "10r/s", 20, ZoneKey::ClientIp);
    let rejected = bench_distinct(&mut group, "distinct/10000", &z, interval);
    println!("rate_limit/distinct/10000: {rejected} rejections (sketch collisions)");

    // The same two cases on a global zone (`scope = "global"`): the decision reads and
    // raises the zone's view of the fleet's counts instead of the sketch. No Redis here:
    // syncing is background work, never on the request path.
    let global = || scoped("site", "10r/s", 20, ZoneKey::ClientIp, ZoneScope::Global);
    bench_at_rate(&mut group, "global/pass", &global(), interval);
    bench_distinct(&mut group, "global/distinct/10000", &global(), interval);

    let site = zone("site", "10r/s", 20, ZoneKey::ClientIp);
    let login = zone("login", "1r/s", 3, ZoneKey::ClientIpLocation);
    let both = |ip| {
        let site_key = site.key_for(ip, no_header, LOCATION).expect("key");
        let login_key = login.key_for(ip, no_header, LOCATION).expect("key");
        acquire_all(&[
            (&site, site.settings.default_use(), site_key),
            (&login, login.settings.default_use(), login_key),
        ])
    };
    while matches!(both(CLIENT), LimitOutcome::Pass { .. }) {}
    group.bench_function("acquire_all/reject", |b| b.iter(|| both(black_box(CLIENT))));
    group.finish();
}

criterion_group!(benches, bench_decisions);
criterion_main!(benches);
