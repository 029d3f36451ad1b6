//! The challenge's cost per request: checking a valid clearance cookie (what every
//! cleared browser request pays; the target is at most 2 µs), refusing a forged one, and
//! one proof-of-work attempt (what a client pays per hash, natively).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use plugins::challenge::token::{solves, Client, Keys};

fn cookie_checks(c: &mut Criterion) {
    let secret = [7u8; 48];
    let keys = Keys::new([secret.as_slice()]).expect("a key");
    let client = Client {
        ip: Some("192.0.2.10".parse().expect("ip")),
        user_agent: b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    };
    let now = 1_800_000_000;
    let cookie = keys.cookie(now + 86_400, &client);
    c.bench_function("challenge/valid_cookie", |b| {
        b.iter(|| keys.check_cookie(black_box(cookie.as_bytes()), now, &client))
    });
    let rotated = Keys::new([[9u8; 48].as_slice(), secret.as_slice()]).expect("keys");
    c.bench_function("challenge/valid_cookie_second_key", |b| {
        b.iter(|| rotated.check_cookie(black_box(cookie.as_bytes()), now, &client))
    });
    let mut forged = cookie.clone().into_bytes();
    forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
    c.bench_function("challenge/forged_cookie", |b| {
        b.iter(|| keys.check_cookie(black_box(&forged), now, &client))
    });
    // One attempt at the proof of work natively: what a crawler's core pays per hash (the
    // page's script does the same in JavaScript).
    let challenge = keys.challenge(16, now + 300, [3; 16], &client);
    c.bench_function("challenge/one_hash_attempt", |b| {
        b.iter(|| solves(black_box(&challenge), black_box("1234567"), 16))
    });
}

criterion_group!(benches, cookie_checks);
criterion_main!(benches);
