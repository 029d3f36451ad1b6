//! `fake-tailnet`: runs a fake MagicDNS server and fake HTTP/HTTPS peers on loopback until
//! SIGINT/SIGTERM, printing where everything listens. For demos and manual benchmarks.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use fake_tailnet::{FakeTailnet, PeerSpec, TailnetConfig, DEFAULT_DOMAIN, DEFAULT_TTL};

/// Command line of the fake tailnet.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A fake Tailscale tailnet on loopback (MagicDNS + HTTP/HTTPS peers)"
)]
struct Args {
    /// DNS listen address (UDP and TCP); port 0 picks a free port.
    #[arg(long, default_value = "127.100.100.100:0")]
    dns: SocketAddr,
    /// Tailnet domain.
    #[arg(long, default_value = DEFAULT_DOMAIN)]
    domain: String,
    /// TTL of DNS answers in seconds.
    #[arg(long, default_value_t = DEFAULT_TTL)]
    ttl: u32,
    /// A peer short name (repeatable); default a single peer `docs`.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Response body size for a peer, as NAME=BYTES (repeatable).
    #[arg(long = "peer-size", value_parser = parse_peer_size)]
    peer_sizes: Vec<(String, usize)>,
}

/// Parses `NAME=BYTES`.
fn parse_peer_size(s: &str) -> Result<(String, usize), String> {
    let (name, size) = s.split_once('=').ok_or("expected NAME=BYTES")?;
    let size = size
        .parse()
        .map_err(|e| format!("bad size {size:?}: {e}"))?;
    Ok((name.to_string(), size))
}

/// Turns the command line into a tailnet configuration.
fn config(args: Args) -> Result<TailnetConfig, String> {
    let mut names = args.peers;
    if names.is_empty() {
        names.push("docs".to_string());
    }
    let mut peers: Vec<PeerSpec> = names.iter().map(|n| PeerSpec::new(n)).collect();
    for (name, size) in args.peer_sizes {
        let peer = peers.iter_mut().find(|p| p.name == name);
        let peer = peer.ok_or_else(|| format!("--peer-size for unknown peer {name:?}"))?;
        peer.response.body_size = size;
    }
    Ok(TailnetConfig {
        domain: args.domain,
        dns_bind: args.dns,
        ttl: args.ttl,
        peers,
    })
}

/// Prints where everything listens, one `key value...` line each.
fn print_summary(tailnet: &FakeTailnet) {
    println!("dns {}", tailnet.dns_addr());
    println!("domain {}", tailnet.domain());
    println!("http_port {}", tailnet.http_port());
    println!("https_port {}", tailnet.https_port());
    match fake_tailnet::ca_pem_file() {
        Ok(path) => println!("ca {}", path.display()),
        Err(e) => eprintln!("warning: could not provide the CA file: {e}"),
    }
    for peer in tailnet.peers() {
        println!("peer {} {} {}", peer.name(), peer.fqdn(), peer.ip());
    }
    println!("ready");
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match config(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fake-tailnet: {e}");
            return ExitCode::from(2);
        }
    };
    let tailnet = match FakeTailnet::start(config).await {
        Ok(tailnet) => tailnet,
        Err(e) => {
            eprintln!("fake-tailnet: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_summary(&tailnet);
    if let Err(e) = wait_for_signal().await {
        eprintln!("fake-tailnet: waiting for signals failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
