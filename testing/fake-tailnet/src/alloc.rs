//! Picking peer addresses in 127.100.0.0/16 and binding their listeners.
//!
//! Many fake tailnets may run at once in different processes, so addresses are random and a
//! bind conflict (`EADDRINUSE`) just means "try another address". A peer given a fixed
//! address ([`crate::PeerSpec::ip`]) is bound there or fails.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::FakeTailnetError;

/// Full restarts (new first address, new ports) before giving up.
const ROUNDS: u32 = 16;
/// Random addresses tried for one peer at fixed ports before giving up.
const ADDRESS_ATTEMPTS: u32 = 64;
/// Listen backlog, generous for benchmarks.
const BACKLOG: i32 = 1024;

/// A peer's two bound (not yet listening-in-tokio) listeners.
pub(crate) struct BoundPeer {
    /// The peer's address.
    pub ip: Ipv4Addr,
    /// Plain HTTP listener.
    pub http: TcpListener,
    /// HTTPS listener.
    pub https: TcpListener,
}

/// A small non-cryptographic random source seeded by the std hasher's random keys.
pub(crate) struct Rng(u64);

impl Rng {
    /// A freshly seeded generator (different in every process and call).
    pub(crate) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        Self(hasher.finish() | 1)
    }

    /// The next 64 random bits (xorshift64*).
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random address in 127.100.0.0/16, avoiding `.0`/`.255` hosts and `exclude`.
    pub(crate) fn peer_ip(&mut self, exclude: &HashSet<Ipv4Addr>) -> Ipv4Addr {
        loop {
            let [a, b] = ((self.next() >> 16) as u16).to_be_bytes();
            let ip = Ipv4Addr::new(127, 100, a, b);
            if b != 0 && b != 255 && !exclude.contains(&ip) {
                return ip;
            }
        }
    }
}

/// Binds one TCP listener with `SO_REUSEADDR` and a large backlog.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// True for errors that mean "this address/port is taken, try another".
fn is_conflict(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
    )
}

/// Binds HTTP and HTTPS listeners on `ip` at the given ports (0 = ephemeral).
pub(crate) fn bind_pair(ip: Ipv4Addr, http_port: u16, https_port: u16) -> io::Result<BoundPeer> {
    let http = listen(SocketAddr::from((ip, http_port)))?;
    let https = listen(SocketAddr::from((ip, https_port)))?;
    Ok(BoundPeer { ip, http, https })
}

/// The local port of a bound listener.
fn port_of(listener: &TcpListener) -> io::Result<u16> {
    Ok(listener.local_addr()?.port())
}

/// Binds one peer on a random free address at fixed ports, trying a bounded number of addresses.
pub(crate) fn bind_at_ports(
    rng: &mut Rng,
    exclude: &HashSet<Ipv4Addr>,
    http_port: u16,
    https_port: u16,
) -> Result<BoundPeer, FakeTailnetError> {
    for _ in 0..ADDRESS_ATTEMPTS {
        let ip = rng.peer_ip(exclude);
        match bind_pair(ip, http_port, https_port) {
            Ok(bound) => return Ok(bound),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(FakeTailnetError::io(format!("bind peer on {ip}"), e)),
        }
    }
    Err(FakeTailnetError::AddressesExhausted {
        what: format!("a peer at ports {http_port}/{https_port}"),
        attempts: ADDRESS_ATTEMPTS,
    })
}

/// Binds one peer per entry of `fixed` (its fixed address, or `None` for a random one),
/// on distinct addresses sharing one HTTP and one HTTPS port.
pub(crate) fn bind_peers(
    fixed: &[Option<Ipv4Addr>],
    exclude: &HashSet<Ipv4Addr>,
) -> Result<Vec<BoundPeer>, FakeTailnetError> {
    let mut rng = Rng::new();
    for _ in 0..ROUNDS {
        if let Some(bound) = try_round(&mut rng, fixed, exclude)? {
            return Ok(bound);
        }
    }
    Err(FakeTailnetError::AddressesExhausted {
        what: format!("{} peers", fixed.len()),
        attempts: ROUNDS,
    })
}

/// One attempt: first peer on ephemeral ports, the rest at those ports; `None` on conflict.
fn try_round(
    rng: &mut Rng,
    fixed: &[Option<Ipv4Addr>],
    exclude: &HashSet<Ipv4Addr>,
) -> Result<Option<Vec<BoundPeer>>, FakeTailnetError> {
    let mut used = exclude.clone();
    used.extend(fixed.iter().flatten());
    let first_fixed = fixed.first().copied().flatten();
    let first_ip = first_fixed.unwrap_or_else(|| rng.peer_ip(&used));
    let first = match bind_pair(first_ip, 0, 0) {
        Ok(bound) => bound,
        Err(e) if is_conflict(&e) && first_fixed.is_none() => return Ok(None),
        Err(e) => return Err(FakeTailnetError::io(format!("bind peer on {first_ip}"), e)),
    };
    let ports = port_of(&first.http).and_then(|h| Ok((h, port_of(&first.https)?)));
    let (http_port, https_port) =
        ports.map_err(|e| FakeTailnetError::io("read peer listener port", e))?;
    used.insert(first.ip);
    let mut all = vec![first];
    for ip in fixed.iter().skip(1) {
        let bound = match ip {
            Some(ip) => match bind_pair(*ip, http_port, https_port) {
                Ok(bound) => bound,
                // The shared ports are taken there: start over with new ones.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(None),
                Err(e) => return Err(FakeTailnetError::io(format!("bind peer on {ip}"), e)),
            },
            None => match bind_at_ports(rng, &used, http_port, https_port) {
                Ok(bound) => bound,
                Err(FakeTailnetError::AddressesExhausted { .. }) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        used.insert(bound.ip);
        all.push(bound);
    }
    Ok(Some(all))
}
