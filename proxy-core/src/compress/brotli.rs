//! A Brotli encoder that ends its stream. Pingora 0.9's own (`compression::brotli`) only
//! flushes at the end of the body and never writes the final meta-block, so a strict decoder
//! (the `brotli` crate's, for one) rejects what it sends; this one finishes the stream with
//! the same library, window and buffer.

use bytes::Bytes;
use pingora::protocols::http::compression::{Encode, COMPRESSION_ERROR};
use pingora::{OrErr, Result};
use std::io::Write;
use std::time::{Duration, Instant};

/// Pingora's window (2^19 bytes): bounded memory per response.
const WINDOW_BITS: u32 = 19;
const BUFFER_SIZE: usize = 4096;

pub(super) struct BrotliEncoder {
    writer: Option<brotli::CompressorWriter<Vec<u8>>>,
    total_in: usize,
    total_out: usize,
    duration: Duration,
}

impl BrotliEncoder {
    pub(super) fn new(quality: u32) -> Self {
        Self {
            writer: Some(brotli::CompressorWriter::new(
                Vec::new(),
                BUFFER_SIZE,
                quality,
                WINDOW_BITS,
            )),
            total_in: 0,
            total_out: 0,
            duration: Duration::ZERO,
        }
    }
}

impl Encode for BrotliEncoder {
    fn encode(&mut self, input: &[u8], end: bool) -> Result<Bytes> {
        let start = Instant::now();
        let Some(writer) = self.writer.as_mut() else {
            return Ok(Bytes::new()); // the stream has ended
        };
        self.total_in += input.len();
        writer
            .write_all(input)
            .or_err(COMPRESSION_ERROR, "while compressing Brotli")?;
        let out = match end {
            // Finishing writes the last meta-block.
            true => self
                .writer
                .take()
                .map(|w| w.into_inner())
                .unwrap_or_default(),
            false => std::mem::take(writer.get_mut()),
        };
        self.total_out += out.len();
        self.duration += start.elapsed();
        Ok(out.into())
    }

    fn stat(&self) -> (&'static str, usize, usize, Duration) {
        ("brotli", self.total_in, self.total_out, self.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_stream_ends_and_decodes_to_the_input() {
        let mut encoder = BrotliEncoder::new(5);
        let input: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        for part in input.chunks(3000) {
            out.extend_from_slice(&encoder.encode(part, false).unwrap());
        }
        out.extend_from_slice(&encoder.encode(&[], true).unwrap());
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&out[..], 4096)
            .read_to_end(&mut decoded)
            .expect("a complete Brotli stream");
        assert_eq!(decoded, input);
        assert_eq!(encoder.stat().1, input.len());
        assert!(encoder.encode(b"late", true).unwrap().is_empty());
    }
}
