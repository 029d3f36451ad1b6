//! Rate limits of the `proxy-app demo` binary, end to end. The limits' behaviour is tested
//! in-process in proxy-core's `tests/limits.rs`.

#![cfg(feature = "demo")]

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn the_demo_limits_docs_login_to_1rps_burst_3() {
    let demo = Demo::start().await;
    let addr = demo.addr;
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let ready = eventually(Duration::from_secs(30), || {
        raw_request(addr, health).starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(ready, "demo did not start");
    let url = format!("http://{addr}/login");
    let mut codes = Vec::new();
    for _ in 0..6 {
        let response = client()
            .get(&url)
            .header("host", "docs.demo.localhost")
            .header("fly-client-ip", "198.51.100.99")
            .send()
            .await
            .expect("request to the demo");
        codes.push(response.status().as_u16());
    }
    assert_eq!(&codes[..4], [200; 4], "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
}
