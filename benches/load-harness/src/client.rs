//! A minimal HTTP/1.1 client for many GETs on one keep-alive connection: the cache fills,
//! the requests counted under callgrind, and the training run ([`crate::train`]).

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A minimal HTTP/1.1 client for responses with a `Content-Length`.
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
    /// The server said `Connection: close`: the next GET connects again.
    closed: bool,
}

impl Client {
    /// Connects, with 5 s timeouts on every read and write.
    pub fn connect(addr: SocketAddr) -> Result<Client> {
        Ok(Client {
            addr,
            reader: BufReader::new(open(addr)?),
            body: Vec::new(),
            closed: false,
        })
    }

    /// One GET: the status and the body's length (the body is read and dropped).
    pub fn get(&mut self, host: &str, path: &str) -> Result<(u16, usize)> {
        self.get_with(host, path, &[])
    }

    /// [`Client::get`] with `headers` (such as `Accept-Encoding: gzip`) added; on a new
    /// connection if the server closed the last one after its response.
    pub fn get_with(&mut self, host: &str, path: &str, headers: &[&str]) -> Result<(u16, usize)> {
        if self.closed {
            self.reader = BufReader::new(open(self.addr)?);
            self.closed = false;
        }
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        let (status, length) = self.read_head().with_context(|| format!("GET {path}"))?;
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok((status, length))
    }

    /// The status and `Content-Length` of a response head; notes `Connection: close`.
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
                } else if name.eq_ignore_ascii_case("connection")
                    && value.trim().eq_ignore_ascii_case("close")
                {
                    self.closed = true;
                }
            }
        }
        Ok((status, length.context("response without Content-Length")?))
    }
}

/// A connection to `addr` with 5 s timeouts on every read and write.
fn open(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}
