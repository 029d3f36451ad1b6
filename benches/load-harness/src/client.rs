//! A minimal HTTP/1.1 client for many GETs on one keep-alive connection: the cache fills
//! and the requests counted under callgrind.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A minimal HTTP/1.1 client for responses with a `Content-Length`.
pub struct Client {
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
}

impl Client {
    /// Connects, with 5 s timeouts on every read and write.
    pub fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            reader: BufReader::new(stream),
            body: Vec::new(),
        })
    }

    /// One GET: the status and the body's length (the body is read and dropped).
    pub fn get(&mut self, host: &str, path: &str) -> Result<(u16, usize)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        let (status, length) = self.read_head().with_context(|| format!("GET {path}"))?;
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok((status, length))
    }

    /// The status and `Content-Length` of a response head.
    fn read_head(&mut self) -> Result<(u16, usize)> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok();
                }
            }
        }
        Ok((status, length.context("response without Content-Length")?))
    }
}
