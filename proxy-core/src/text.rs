//! Addresses as text on the per-request path (forwarding headers, log lines): written digit
//! by digit for IPv4 instead of through `fmt`, which costs several times more, and kept on
//! the stack.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

/// Longest IPv4 text: `255.255.255.255`.
const IPV4_MAX: usize = 15;

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

/// Longest text [`header_value`] keeps inline: a request id (a UUID is 36 bytes) and an
/// IPv6 address (up to 45) fit.
const INLINE_MAX: usize = 48;

/// A short text owned inline, for a [`bytes::Bytes`] made in one allocation.
struct InlineText {
    bytes: [u8; INLINE_MAX],
    len: u8,
}

impl AsRef<[u8]> for InlineText {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A header value of a short per-request text (an address, a request id) whose clones share
/// it without allocating: `HeaderValue::from_bytes` copies into a vector, and the first
/// clone of a value made from a vector allocates again to share it. A text that is not a
/// valid header value gets `None`.
pub(crate) fn header_value(text: &[u8]) -> Option<http::HeaderValue> {
    let len = match u8::try_from(text.len()) {
        Ok(len) if usize::from(len) <= INLINE_MAX => len,
        _ => return http::HeaderValue::from_bytes(text).ok(),
    };
    let mut bytes = [0; INLINE_MAX];
    bytes[..text.len()].copy_from_slice(text);
    let shared = bytes::Bytes::from_owner(InlineText { bytes, len });
    http::HeaderValue::from_maybe_shared(shared).ok()
}

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

/// Room for the texts of one log line: the time (24 bytes), the client IP (at most 45) and
/// two peer addresses, each an IP socket (`[v6%scope]:port`, at most 64 bytes) or a Unix
/// socket path (at most 108 bytes).
pub(crate) const LINE_TEXT_MAX: usize = 320;

/// Several texts written one after another into one stack buffer, then read back as one
/// `str` checked once: each text is known by its byte range. A log line's time and
/// addresses cost one UTF-8 check instead of one each. A text that does not fit whole is
/// left out (its range is empty).
pub(crate) struct Texts<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Texts<N> {
    pub(crate) fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// All texts written so far, in one `str`.
    pub(crate) fn as_str(&self) -> &str {
        // Only whole `str`s and ASCII are ever written, so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    /// Runs `write`, returning the range of what it wrote, or an empty range (and nothing
    /// kept) when it ran out of room.
    fn text(&mut self, write: impl FnOnce(&mut Self) -> bool) -> Range<usize> {
        let start = self.len;
        if !write(self) {
            self.len = start;
        }
        start..self.len
    }

    /// ASCII bytes (the caller's guarantee; anything else makes [`Self::as_str`] empty).
    pub(crate) fn ascii(&mut self, bytes: &[u8]) -> Range<usize> {
        self.text(|t| t.push(bytes))
    }

    /// `ip` as text (`1.2.3.4`, `::1`).
    pub(crate) fn ip(&mut self, ip: IpAddr) -> Range<usize> {
        self.text(|t| match ip {
            IpAddr::V4(v4) => t.push_ipv4(v4),
            IpAddr::V6(v6) => t.push_display(v6),
        })
    }

    /// `addr` as text (`1.2.3.4:80`, `[::1]:80`).
    pub(crate) fn socket(&mut self, addr: &SocketAddr) -> Range<usize> {
        self.text(|t| match addr {
            SocketAddr::V4(v4) => t.push_ipv4(*v4.ip()) && t.push_port(v4.port()),
            SocketAddr::V6(_) => t.push_display(addr),
        })
    }

    /// A peer address of Pingora's (an IP socket or a Unix socket path).
    pub(crate) fn peer(
        &mut self,
        addr: &pingora::protocols::l4::socket::SocketAddr,
    ) -> Range<usize> {
        match addr {
            pingora::protocols::l4::socket::SocketAddr::Inet(inet) => self.socket(inet),
            other => self.text(|t| t.push_display(other)),
        }
    }

    /// Writes `ip` in place.
    fn push_ipv4(&mut self, ip: Ipv4Addr) -> bool {
        let room = self
            .buf
            .get_mut(self.len..)
            .and_then(|rest| rest.first_chunk_mut::<IPV4_MAX>());
        let Some(room) = room else {
            return false;
        };
        self.len += ipv4(ip, room).len();
        true
    }

    /// Writes `:port`, digit by digit in place: no copy of variable length.
    fn push_port(&mut self, port: u16) -> bool {
        let digits = match port {
            0..=9 => 1,
            10..=99 => 2,
            100..=999 => 3,
            1000..=9999 => 4,
            _ => 5,
        };
        let end = self.len + 1 + digits;
        let Some(room) = self.buf.get_mut(self.len..end) else {
            return false;
        };
        room[0] = b':';
        let mut rest = port;
        for slot in room[1..].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.len = end;
        true
    }

    fn push_display(&mut self, value: impl fmt::Display) -> bool {
        write!(self, "{value}").is_ok()
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

impl<const N: usize> fmt::Write for Texts<N> {
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
    fn header_values_keep_their_text_inline_or_not() {
        for len in [0, 1, 36, INLINE_MAX, INLINE_MAX + 1, 255, 256, 300] {
            let text = "a".repeat(len);
            let value = header_value(text.as_bytes()).expect("a valid value");
            assert_eq!(value.as_bytes(), text.as_bytes(), "{len} bytes");
            let copy = value.clone();
            drop(value);
            assert_eq!(
                copy.as_bytes(),
                text.as_bytes(),
                "a clone outlives the value"
            );
        }
        assert!(header_value(b"a\nb").is_none());
        assert!(header_value(format!("{}\n", "a".repeat(300)).as_bytes()).is_none());
    }

    #[test]
    fn addresses_match_display() {
        let mut texts = Texts::<4096>::new();
        let mut expected = Vec::new();
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: IpAddr = text.parse().unwrap();
            expected.push((texts.ip(parsed), parsed.to_string()));
        }
        for text in [
            "1.2.3.4:0",
            "10.0.0.1:9",
            "127.0.0.1:65535",
            "1.1.1.1:10",
            "1.1.1.1:99",
            "1.1.1.1:100",
            "1.1.1.1:999",
            "1.1.1.1:1000",
            "1.1.1.1:9999",
            "1.1.1.1:10000",
            "[::1]:8080",
            "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535",
        ] {
            let parsed: SocketAddr = text.parse().unwrap();
            expected.push((texts.socket(&parsed), parsed.to_string()));
        }
        expected.push((
            texts.ascii(b"2026-11-23T04:05:06.789Z"),
            "2026-11-23T04:05:06.789Z".into(),
        ));
        let all = texts.as_str();
        for (range, text) in expected {
            assert_eq!(&all[range], text);
        }
    }

    #[test]
    fn a_log_lines_longest_texts_fit() {
        let mut texts = Texts::<LINE_TEXT_MAX>::new();
        let time = texts.ascii(&[b'0'; 24]);
        let ip = texts.ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
        let longest_socket: SocketAddr =
            "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535"
                .parse()
                .unwrap();
        let path = "/".repeat(107);
        let unix = pingora::protocols::l4::socket::SocketAddr::Unix(
            std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
        );
        let peer = texts.peer(&unix);
        let other = texts.socket(&longest_socket);
        let all = texts.as_str();
        assert_eq!(all[time].len(), 24);
        assert_eq!(all[ip].len(), 39);
        assert_eq!(all[peer].len(), 107);
        assert_eq!(&all[other], longest_socket.to_string());
    }

    #[test]
    fn a_text_without_room_is_left_out() {
        let mut texts = Texts::<20>::new();
        let first = texts.ip("10.20.30.40".parse().unwrap());
        let second = texts.socket(&"10.20.30.40:8080".parse().unwrap());
        let third = texts.ip("::1".parse().unwrap());
        let fourth = texts.socket(&"[::1]:8080".parse().unwrap());
        let all = texts.as_str();
        assert_eq!(&all[first], "10.20.30.40");
        assert_eq!(&all[second], "");
        assert_eq!(&all[third], "::1");
        assert_eq!(&all[fourth], "");
    }
}
