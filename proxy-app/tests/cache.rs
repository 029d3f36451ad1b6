//! Response caching where it needs the `proxy-app` process: the demo's cache and a full disk
//! (the proxy run in a mount namespace of its own). The rest of caching is tested in-process in proxy-core's
//! `tests/cache.rs`.

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

fn requests(tailnet: &FakeTailnet) -> u64 {
    tailnet.peer("docs").map_or(0, |p| p.requests())
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_caches_the_docs_site() {
    let demo = Demo::start().await;
    let addr = demo.addr;
    let request = "GET / HTTP/1.1\r\nHost: docs.demo.localhost\r\nConnection: close\r\n\r\n";
    let mut first = String::new();
    for _ in 0..300 {
        first = raw_request(addr, request);
        if first.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = raw_request(addr, request).to_ascii_lowercase();
    assert!(second.contains("x-cache-status: hit"), "{second}");
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

/// Whether this process runs as root (mount namespaces and tmpfs mounts need it).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

#[tokio::test]
async fn full_disk_degrades_to_memory_caching() {
    if !running_as_root() {
        eprintln!("skipped: a tmpfs in a private mount namespace needs root");
        return;
    }
    let tailnet = tailnet(&["docs"]).await;
    // The disk tier's directory is a 96 KiB tmpfs, mounted in a mount namespace of the
    // proxy's own: room for two 40 KB entries, not three. The tier's own bound is far
    // larger, so the third write fails with ENOSPC, as on a full disk.
    let mountpoint = tempfile::tempdir().expect("temp dir");
    let storage = format!(
        "[cache]\n[cache.disk]\npath = \"{}\"\nmax_size = \"10m\"",
        mountpoint.path().display()
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount -t tmpfs -o size=96k tmpfs "$0" && exec "$@""#,
    ];
    let mut wrapper = wrapper.to_vec();
    let mountpoint_arg = mountpoint.path().display().to_string();
    wrapper.push(&mountpoint_arg);
    let proxy = Proxy::start_under(&wrapper, &[], &config(&tailnet, &storage, "", ""), &[]);
    // The tier's directory as the proxy sees it, inside its mount namespace.
    let disk = std::path::PathBuf::from(format!("/proc/{}/root", proxy.pid())).join(
        mountpoint
            .path()
            .strip_prefix("/")
            .expect("absolute temp dir"),
    );
    // Each path answers 200 with its whole 40 KB body and the given cache status.
    let expect = |paths: &'static [&'static str], status: &'static str| {
        let proxy = &proxy;
        async move {
            for path in paths {
                let reply = get(proxy, "docs.example.com", path).await;
                assert_eq!(
                    (
                        reply.status,
                        reply.header("x-cache-status"),
                        reply.body.len()
                    ),
                    (200, Some(status), 40_000),
                    "{path}"
                );
            }
        }
    };
    expect(&["/a?size=40000", "/b?size=40000"], "MISS").await;
    assert!(
        eventually(Duration::from_secs(10), || entry_files(&disk).len() == 2).await,
        "two entries fit on the disk tier"
    );

    expect(&["/c?size=40000"], "MISS").await;
    assert!(
        eventually(Duration::from_secs(10), || proxy
            .logs()
            .lines()
            .any(|line| line.contains("cache disk write failed")
                && line.contains("No space left on device")))
        .await,
        "the failed write is logged:\n{}",
        proxy.logs()
    );
    // The full disk costs the tier its copy, not the client its answer or memory its copy;
    // no partial file is left behind.
    expect(&["/a?size=40000", "/c?size=40000"], "HIT").await;
    assert_eq!(requests(&tailnet), 3);
    let files: Vec<_> = std::fs::read_dir(&disk)
        .expect("read the tier's directory")
        .filter_map(|item| item.ok().map(|i| i.path()))
        .collect();
    assert_eq!(entry_files(&disk).len(), 2, "{files:?}");
    assert!(
        !files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "tmp")),
        "{files:?}"
    );
}
