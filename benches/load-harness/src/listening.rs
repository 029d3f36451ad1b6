//! Where a server under test listens, without ever binding, releasing and binding a port
//! again (another process could take it in between): either the harness holds the listener
//! and the server inherits it (nginx, HAProxy), or the server binds port 0 and the harness
//! reads the port it got from the kernel's socket table (proxy-app, Caddy).

use anyhow::Result;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The descriptor an inherited listener has in the server: nginx reads it from `NGINX=3;`,
/// HAProxy from `bind fd@3`.
pub const INHERITED_FD: i32 = 3;

/// A listener on a loopback port the kernel picks, held until the server has inherited it.
pub fn hold() -> Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0")?)
}

/// Gives `command`'s process `listener` as descriptor [`INHERITED_FD`]; the harness's own
/// copy may be dropped once the process has started.
pub fn pass(command: &mut Command, listener: &TcpListener) {
    let fd = listener.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe and the closure touches no shared state.
    unsafe {
        command.pre_exec(move || {
            // dup2 clears close-on-exec on the copy; a listener already at the right number
            // keeps its own, so clear it by hand.
            let rc = if fd == INHERITED_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, INHERITED_FD)
            };
            match rc {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
}

/// The TCP address process `pid` listens on at `ip`, once it does: the listening sockets
/// among its open files, found in its network namespace's socket table.
pub fn listener_on(pid: u32, ip: Ipv4Addr) -> Option<SocketAddr> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let addr = parse_proc_addr(local)?;
        (*state == "0A" && inodes.contains(*inode) && addr.ip() == IpAddr::V4(ip)).then_some(addr)
    })
}

/// `0100007F:1F90`: an IPv4 address (bytes in host order) and port, in hex.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((ip.to_le_bytes(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_listener_and_no_other() {
        let listener = hold().unwrap();
        let held = listener.local_addr().unwrap();
        let found = listener_on(std::process::id(), Ipv4Addr::LOCALHOST);
        // Other tests of this process may hold listeners too: any of ours is fine, but ours
        // must be among them while nothing listens on 127.0.0.2.
        assert!(found.is_some_and(|a| a.ip() == held.ip()), "{found:?}");
        assert_eq!(
            listener_on(std::process::id(), Ipv4Addr::new(127, 0, 0, 2)),
            None
        );
    }

    #[test]
    fn a_passed_listener_is_descriptor_3_of_the_server() {
        let listener = hold().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "readlink /proc/self/fd/3"]);
        pass(&mut command, &listener);
        let out = command.output().unwrap();
        let target = String::from_utf8_lossy(&out.stdout);
        assert!(target.starts_with("socket:["), "{target:?}");
    }

    #[test]
    fn reads_the_kernels_address_format() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("0100007F"), None);
    }
}
