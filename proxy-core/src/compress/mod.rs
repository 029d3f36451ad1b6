//! Response compression (`compress = { }` on sites and locations): gzip, brotli and zstd,
//! chosen from the request's `Accept-Encoding` with its q-values, for configured media types
//! above a minimum length.
//!
//! The encoders are Pingora's (gzip, zstd) and the `brotli` crate's (module `brotli`); what is
//! ours is the choice, which Pingora's `ResponseCompression` module cannot make the way the
//! config asks (it ignores q-values, has a fixed type list and minimum, and compresses on the
//! way to the client, so every cache hit would be compressed again). Here the upstream's
//! response is compressed as it arrives, before pingora-cache stores it: a cached object is
//! stored once per coding, already compressed, and a hit sends it as stored. The cache tells
//! the codings apart by the chosen coding (`cache_vary_filter`), not by the raw header, and
//! the upstream is asked for exactly that coding, so what it sends fits the variant.
//!
//! Not for: decompressing an upstream's encoded body for a client that cannot read it (any
//! client can read identity, and the proxy never asks an upstream for anything else).

mod brotli;
mod negotiate;
mod response;

pub use negotiate::negotiate;
pub(crate) use response::CompressRequest;

use pingora::protocols::http::compression::{Algorithm, Encode};
use std::fmt;

/// A content coding the proxy compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `zstd` (RFC 8878).
    Zstd,
    /// `br`, Brotli (RFC 7932).
    Brotli,
    /// `gzip` (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Every coding, in the default order of preference.
    pub const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    /// The coding's token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The coding a token names (case-insensitive; `x-gzip` is gzip), if the proxy has it.
    pub fn from_token(token: &str) -> Option<Encoding> {
        Encoding::ALL
            .into_iter()
            .find(|e| token.eq_ignore_ascii_case(e.token()))
            .or_else(|| {
                token
                    .eq_ignore_ascii_case("x-gzip")
                    .then_some(Encoding::Gzip)
            })
    }

    fn index(self) -> usize {
        self as usize
    }

    /// A streaming encoder at `level`: Pingora's for gzip and zstd, ours for Brotli (see
    /// [`brotli`]).
    fn encoder(self, level: u32) -> Option<Box<dyn Encode + Send + Sync>> {
        match self {
            Encoding::Zstd => Algorithm::Zstd.compressor(level),
            Encoding::Brotli => Some(Box::new(brotli::BrotliEncoder::new(level))),
            Encoding::Gzip => Algorithm::Gzip.compressor(level),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The media types a location compresses, compared without parameters and case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaTypes {
    /// Any type (`"*"`).
    Any,
    /// These types: `type/subtype`, or `type/*` for every subtype (lowercase).
    Listed(Vec<String>),
}

impl MediaTypes {
    /// Whether a `Content-Type` value is one of these types.
    pub fn contains(&self, content_type: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(content_type) else {
            return false;
        };
        let essence = text.split(';').next().unwrap_or_default().trim();
        match self {
            MediaTypes::Any => !essence.is_empty(),
            MediaTypes::Listed(types) => {
                types.iter().any(|listed| match listed.strip_suffix("/*") {
                    Some(top) => essence
                        .split_once('/')
                        .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top)),
                    None => essence.eq_ignore_ascii_case(listed),
                })
            }
        }
    }
}

/// A location's compression, compiled from `compress = { }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressPolicy {
    /// The codings offered, in the proxy's order of preference.
    pub encodings: Vec<Encoding>,
    /// The media types compressed.
    pub types: MediaTypes,
    /// Responses declaring a shorter `Content-Length` are not compressed.
    pub min_length: u64,
    /// Level of each coding, indexed as [`Encoding::ALL`].
    pub levels: [u32; 3],
}

impl CompressPolicy {
    /// The level `encoding` compresses at.
    pub fn level(&self, encoding: Encoding) -> u32 {
        self.levels[encoding.index()]
    }
}
