//! Sets of IPs and CIDRs, and the text formats they are read from.

use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// IP addresses and networks. Single addresses (most of a fail2ban list) are a hash
/// lookup; networks are scanned.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpSet {
    addrs: HashSet<IpAddr>,
    nets: Vec<IpNet>,
}

impl IpSet {
    /// Adds an address or network. A `/32` or `/128` is stored as an address.
    pub(crate) fn insert(&mut self, net: IpNet) {
        if net.prefix_len() == net.max_prefix_len() {
            self.addrs.insert(net.addr());
        } else {
            self.nets.push(net.trunc());
        }
    }

    /// Whether `ip` is in the set.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.addrs.contains(&ip) || self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Entries in the set.
    pub(crate) fn len(&self) -> usize {
        self.addrs.len() + self.nets.len()
    }
}

/// A line of a list file that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListWarning {
    /// 1-based line number.
    pub line: usize,
    /// Why it was skipped.
    pub message: String,
}

/// Parses one IP or CIDR (`"192.0.2.1"`, `"2001:db8::/32"`).
pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Parses a list file: one IP/CIDR per line, or nginx `geo` lines (`1.2.3.4 1;`, as
/// fail2ban's nginx actions write them; a value of `0` means "not listed"). `#` starts a
/// comment; blank lines and geo `default` lines are ignored. Bad lines are skipped and
/// reported, never fatal: a half-written fail2ban file must not empty the list.
pub(crate) fn parse_ip_list(text: &str) -> (IpSet, Vec<ListWarning>) {
    let mut set = IpSet::default();
    let mut warnings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let line = line.strip_suffix(';').unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(addr), value, None) = (words.next(), words.next(), words.next()) else {
            warnings.push(warning(i, raw, "expected `IP`, `CIDR` or `IP VALUE;`"));
            continue;
        };
        if addr == "default" || value == Some("0") {
            continue;
        }
        match parse_net(addr) {
            Some(net) => set.insert(net),
            None => warnings.push(warning(i, raw, "not an IP address or CIDR")),
        }
    }
    (set, warnings)
}

fn warning(index: usize, raw: &str, why: &str) -> ListWarning {
    ListWarning {
        line: index + 1,
        message: format!("{why}: `{}`", raw.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn plain_and_geo_formats_with_comments() {
        let text = "# banned\n192.0.2.1\n198.51.100.0/24\n\n203.0.113.7 1;\n203.0.113.8 0;\ndefault 0;\n2001:db8::/32 1; # v6\n";
        let (set, warnings) = parse_ip_list(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        for listed in ["192.0.2.1", "198.51.100.77", "203.0.113.7", "2001:db8::5"] {
            assert!(set.contains(ip(listed)), "{listed}");
        }
        for free in ["192.0.2.2", "203.0.113.8", "2001:db9::1"] {
            assert!(!set.contains(ip(free)), "{free}");
        }
        assert!(set.contains(ip("::ffff:192.0.2.1")));
    }

    #[test]
    fn malformed_lines_are_skipped_and_named() {
        let (set, warnings) = parse_ip_list("192.0.2.1\nnot-an-ip\n192.0.2.2 1 2;\n192.0.2.3\n");
        assert_eq!(set.len(), 2);
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [2, 3]);
        assert!(warnings[0].message.contains("not-an-ip"), "{warnings:?}");
    }
}
