//! Responses read as bytes, their bodies decoded by each coding's own library (flate2,
//! brotli, zstd): what compressed and precompressed answers are checked with.

use super::Served;
use std::io::Read;

/// A response as the client received it: the body's bytes, undecoded.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Raw {
    /// Reads a reqwest response whole (the test client decodes nothing).
    pub async fn read(response: reqwest::Response) -> Raw {
        Raw {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("read body").to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body decoded by the library of the coding `Content-Encoding` names.
    pub fn decoded(&self) -> Vec<u8> {
        decode(self.header("content-encoding"), &self.body)
    }

    pub fn varies_on_accept_encoding(&self) -> bool {
        self.header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
    }
}

/// `body` decoded from `coding` (`None`: identity, returned as it is).
pub fn decode(coding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        Some("zstd") => out = zstd::decode_all(body).expect("valid zstd"),
        Some(other) => panic!("unexpected coding {other}"),
    }
    out
}

/// GET `path` with Host `host` and `headers`, read as bytes.
pub async fn fetch_raw(
    server: &impl Served,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Raw {
    let mut request = super::client().get(server.url(path)).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Raw::read(request.send().await.expect("request through the proxy")).await
}
