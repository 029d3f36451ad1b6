//! Routing on the request path: the Host -> site lookup with 10 and with 1000 sites (an exact
//! hit, a `*.suffix` wildcard hit, a miss), Host normalisation, nginx-style location matching
//! on a realistic table of 11 locations (`=`, `^~`, prefix, regex), and path normalisation.
//! Configs are built with the public builder, so they go through the config compiler.
//! Run with `cargo bench -p proxy-core --bench routing`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use proxy_core::config::{ConfigBuilder, LocationBuilder, SiteBuilder};
use proxy_core::route::{normalize_host, normalize_path, Site};
use proxy_core::RuntimeConfig;

/// `sites` sites: one serving `*.preview.example.net`, the others one exact host each.
fn config_with_sites(sites: usize) -> RuntimeConfig {
    let wildcard = SiteBuilder::new()
        .host("*.preview.example.net")
        .location(LocationBuilder::new("/").respond(200, "preview\n"));
    let mut builder = ConfigBuilder::new().site("preview", wildcard);
    for n in 1..sites {
        let site = SiteBuilder::new()
            .host(format!("site{n}.example.com"))
            .location(LocationBuilder::new("/").respond(200, "ok\n"));
        builder = builder.site(format!("site{n}"), site);
    }
    builder.build().expect("valid config")
}

fn bench_hosts(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_route");
    for sites in [10, 1000] {
        let config = config_with_sites(sites);
        let cases = [
            ("exact", "site7.example.com", Some("site7")),
            ("wildcard", "pr-42.preview.example.net", Some("preview")),
            ("miss", "unknown.example.org", None),
        ];
        for (name, host, expected) in cases {
            let found = config.site_for_host(host).map(|site| site.name());
            assert_eq!(found, expected, "{host} with {sites} sites");
            group.bench_with_input(BenchmarkId::new(name, sites), host, |b, host| {
                b.iter(|| config.site_for_host(black_box(host)).is_some())
            });
        }
    }
    group.finish();

    c.bench_function("host_normalize", |b| {
        b.iter(|| normalize_host(black_box(b"Site7.Example.com:443")))
    });
}

/// One site with a realistic mix of locations, in config file order.
fn location_table() -> RuntimeConfig {
    let patterns = [
        "/",
        "= /robots.txt",
        "= /favicon.ico",
        "^~ /static/",
        "^~ /.well-known/acme-challenge/",
        "/api/",
        "/api/v2/",
        "/admin/",
        "= /login",
        "~* \\.(png|jpe?g|gif|svg|webp|ico|css|js)$",
        "~ ^/users/[0-9]+/avatar$",
    ];
    let site = patterns.iter().fold(
        SiteBuilder::new().host("docs.example.com"),
        |site, pattern| site.location(LocationBuilder::new(*pattern).respond(200, "ok\n")),
    );
    ConfigBuilder::new()
        .site("docs", site)
        .build()
        .expect("valid config")
}

fn bench_locations(c: &mut Criterion) {
    let config = location_table();
    let site: &Site = config.site_for_host("docs.example.com").expect("site");
    // (bench name, normalised path, the location that must win)
    let cases = [
        ("exact", "/robots.txt", "= /robots.txt"),
        ("priority", "/static/css/site.css", "^~ /static/"),
        ("prefix", "/api/v2/users/42", "/api/v2/"),
        (
            "regex",
            "/blog/2024/header.png",
            "~* \\.(png|jpe?g|gif|svg|webp|ico|css|js)$",
        ),
        ("regex_last", "/users/42/avatar", "~ ^/users/[0-9]+/avatar$"),
    ];
    let mut group = c.benchmark_group("location");
    for (name, path, expected) in cases {
        let found = site
            .location_for_path(path.as_bytes())
            .map(|l| l.pattern_text());
        assert_eq!(found, Some(expected), "{path}");
        group.bench_function(name, |b| {
            b.iter(|| site.location_for_path(black_box(path.as_bytes())).is_some())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("path_normalize");
    for (name, path) in [
        ("clean", "/api/v2/users/42"),
        ("dirty", "/api//v2/./users/%34%32/../42"),
    ] {
        assert_eq!(&*normalize_path(path).expect("valid"), b"/api/v2/users/42");
        group.bench_function(name, |b| b.iter(|| normalize_path(black_box(path))));
    }
    group.finish();
}

criterion_group!(benches, bench_hosts, bench_locations);
criterion_main!(benches);
