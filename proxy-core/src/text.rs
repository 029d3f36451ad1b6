//! Addresses as text on the per-request path (forwarding headers, log lines): written digit
//! by digit for IPv4 instead of through `fmt`, which costs several times more, and kept on
//! the stack.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Longest IPv4 text: `255.255.255.255`.
const IPV4_MAX: usize = 15;

/// Room for any IP socket address (`[v6%scope]:port` is at most 64 bytes) and any Unix
/// socket path (at most 108 bytes).
const ADDR_MAX: usize = 128;

/// Every octet's decimal digits (up to three) and how many there are, built at compile
/// time so an address is written by copying, without divisions.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        let digits = [
            b'0' + (n / 100) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ];
        table[n] = match n {
            0..=9 => ([digits[2], 0, 0], 1),
            10..=99 => ([digits[1], digits[2], 0], 2),
            _ => (digits, 3),
        };
        n += 1;
    }
    table
};

/// Writes `ip` into `out`, returning the text's bytes (ASCII digits and dots).
pub(crate) fn ipv4(ip: Ipv4Addr, out: &mut [u8; IPV4_MAX]) -> &[u8] {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        let (digits, count) = OCTETS[usize::from(octet)];
        // At most 4 x 3 digits + 3 dots: always within IPV4_MAX.
        out[len..len + 3].copy_from_slice(&digits);
        len += usize::from(count);
    }
    &out[..len]
}

/// The text of one address, held on the stack.
pub(crate) struct AddrText {
    buf: [u8; ADDR_MAX],
    len: usize,
}

impl AddrText {
    fn empty() -> Self {
        Self {
            buf: [0; ADDR_MAX],
            len: 0,
        }
    }

    /// `ip` as text (`1.2.3.4`, `::1`).
    pub(crate) fn ip(ip: IpAddr) -> Self {
        let mut text = Self::empty();
        match ip {
            IpAddr::V4(v4) => text.push_ipv4(v4),
            IpAddr::V6(v6) => text.push_display(v6),
        }
        text
    }

    /// `addr` as text (`1.2.3.4:80`, `[::1]:80`).
    pub(crate) fn socket(addr: &SocketAddr) -> Self {
        let mut text = Self::empty();
        let SocketAddr::V4(v4) = addr else {
            text.push_display(addr);
            return text;
        };
        text.push_ipv4(*v4.ip());
        text.push(b":");
        text.push(itoa::Buffer::new().format(v4.port()).as_bytes());
        text
    }

    /// A peer address of Pingora's (an IP socket or a Unix socket path).
    pub(crate) fn peer(addr: &pingora::protocols::l4::socket::SocketAddr) -> Self {
        match addr {
            pingora::protocols::l4::socket::SocketAddr::Inet(inet) => Self::socket(inet),
            other => {
                let mut text = Self::empty();
                text.push_display(other);
                text
            }
        }
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only whole `str`s are ever copied in, so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn push_ipv4(&mut self, ip: Ipv4Addr) {
        let mut digits = [0; IPV4_MAX];
        self.push(ipv4(ip, &mut digits));
    }

    fn push_display(&mut self, value: impl fmt::Display) {
        // Overflow cannot happen for the types above; if it did, the text is cut short.
        let _ = write!(self, "{value}");
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        let Some(room) = self.buf.get_mut(self.len..end) else {
            return false;
        };
        room.copy_from_slice(bytes);
        self.len = end;
        true
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.push(s.as_bytes()) {
            true => Ok(()),
            false => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_display() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: IpAddr = text.parse().unwrap();
            assert_eq!(AddrText::ip(parsed).as_str(), parsed.to_string());
        }
        for text in [
            "1.2.3.4:0",
            "10.0.0.1:9",
            "127.0.0.1:65535",
            "[::1]:8080",
            "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535",
        ] {
            let parsed: SocketAddr = text.parse().unwrap();
            assert_eq!(AddrText::socket(&parsed).as_str(), parsed.to_string());
        }
    }
}
