//! The fake MagicDNS server over real UDP and TCP sockets.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{a_records, dns_tcp, dns_udp};
use fake_tailnet::{FakeTailnet, TailnetConfig};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const WAIT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn answers_a_over_udp_and_tcp() {
    let tailnet = FakeTailnet::start(TailnetConfig::new(&["docs", "git"]))
        .await
        .unwrap();
    let docs = tailnet.peer("docs").unwrap();
    assert_eq!(tailnet.dns_addr().ip(), Ipv4Addr::new(127, 100, 100, 100));
    assert_eq!(docs.fqdn(), "docs.tail0fake.ts.net");
    assert_eq!(tailnet.fqdn("docs"), "docs.tail0fake.ts.net");

    let udp = dns_udp(
        tailnet.dns_addr(),
        "docs.tail0fake.ts.net.",
        RecordType::A,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&udp), vec![docs.ip()]);
    assert_eq!(udp.answers[0].ttl, 60);

    let tcp = dns_tcp(
        tailnet.dns_addr(),
        "GIT.Tail0Fake.ts.net.",
        RecordType::A,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(a_records(&tcp), vec![tailnet.peer("git").unwrap().ip()]);
    assert_eq!(tailnet.dns_queries(), 2);
}

#[tokio::test]
async fn nxdomain_for_unknown_and_empty_aaaa_for_known() {
    let tailnet = FakeTailnet::start(TailnetConfig::new(&["docs"]))
        .await
        .unwrap();
    let nx = dns_udp(
        tailnet.dns_addr(),
        "nope.tail0fake.ts.net.",
        RecordType::A,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());

    let aaaa = dns_udp(
        tailnet.dns_addr(),
        "docs.tail0fake.ts.net.",
        RecordType::AAAA,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
}

#[tokio::test]
async fn runtime_changes_apply_immediately() {
    let tailnet = FakeTailnet::start(TailnetConfig::new(&["docs"]))
        .await
        .unwrap();
    let fqdn = tailnet.fqdn("docs");
    let ips = vec![Ipv4Addr::new(127, 100, 1, 1), Ipv4Addr::new(127, 100, 1, 2)];
    tailnet.set_answer(&format!("{fqdn}."), ips.clone());
    tailnet.set_ttl(5);
    let msg = dns_tcp(tailnet.dns_addr(), &format!("{fqdn}."), RecordType::A, WAIT)
        .await
        .unwrap();
    assert_eq!(a_records(&msg), ips);
    assert!(msg.answers.iter().all(|r| r.ttl == 5));

    tailnet.set_answer(
        "extra.tail0fake.ts.net",
        vec![Ipv4Addr::new(127, 100, 9, 9)],
    );
    let extra = dns_udp(
        tailnet.dns_addr(),
        "extra.tail0fake.ts.net.",
        RecordType::A,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(a_records(&extra), vec![Ipv4Addr::new(127, 100, 9, 9)]);

    tailnet.remove_answer(&fqdn);
    let gone = dns_udp(tailnet.dns_addr(), &format!("{fqdn}."), RecordType::A, WAIT)
        .await
        .unwrap();
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn silent_mode_drops_queries() {
    let tailnet = FakeTailnet::start(TailnetConfig::new(&["docs"]))
        .await
        .unwrap();
    let name = "docs.tail0fake.ts.net.";
    let short = Duration::from_millis(300);
    tailnet.set_silent(true);
    assert!(dns_udp(tailnet.dns_addr(), name, RecordType::A, short)
        .await
        .is_none());
    assert!(dns_tcp(tailnet.dns_addr(), name, RecordType::A, short)
        .await
        .is_none());
    assert_eq!(tailnet.dns_queries(), 2);

    tailnet.set_silent(false);
    let msg = dns_udp(tailnet.dns_addr(), name, RecordType::A, WAIT)
        .await
        .unwrap();
    assert_eq!(a_records(&msg), vec![tailnet.peer("docs").unwrap().ip()]);
}

#[tokio::test]
async fn explicit_dns_port_serves_udp_and_tcp() {
    let probe = std::net::UdpSocket::bind("127.100.100.101:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let config = TailnetConfig {
        dns_bind: addr,
        ..TailnetConfig::new(&["docs"])
    };
    let tailnet = FakeTailnet::start(config).await.unwrap();
    assert_eq!(tailnet.dns_addr(), addr);
    let name = "docs.tail0fake.ts.net.";
    assert!(dns_tcp(addr, name, RecordType::A, WAIT).await.is_some());
    assert!(dns_udp(addr, name, RecordType::A, WAIT).await.is_some());
}
