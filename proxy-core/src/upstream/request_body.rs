//! [`BufferedBody`]: a request body received whole before anything of the request goes
//! upstream (`request_buffering`, nginx's `proxy_request_buffering on`), so a slow or cut-off
//! upload never reaches the origin and never holds an upstream connection.
//!
//! The first `memory` bytes stay in memory; the rest goes to an unnamed temporary file (the
//! operating system removes it once it is closed, when the request ends, however it ends).

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::io::SeekFrom;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Parts read back from the temporary file.
const FILE_PART: usize = 64 << 10;

/// Why a body could not be received whole.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// It is larger than the location accepts (a 413).
    TooLarge,
    /// The client failed (went away, too slow) or the temporary file did: the request ends.
    Failed(Box<Error>),
}

/// A request body, received whole: memory first, then a temporary file.
#[derive(Debug)]
pub(crate) struct BufferedBody {
    memory: Vec<Bytes>,
    file: Option<tokio::fs::File>,
    /// The next part to forward: an index into `memory`, then the file.
    next: usize,
    file_started: bool,
}

impl BufferedBody {
    /// Reads the client's body to its end: at most `limit` bytes in all (0: no limit), the
    /// first `memory` of them in memory.
    pub(crate) async fn receive(
        session: &mut Session,
        memory: usize,
        limit: u64,
    ) -> Result<Self, ReceiveError> {
        let mut body = BufferedBody {
            memory: Vec::new(),
            file: None,
            next: 0,
            file_started: false,
        };
        let mut in_memory = 0usize;
        let mut total = 0u64;
        while let Some(part) = session
            .read_request_body()
            .await
            .map_err(|e| ReceiveError::Failed(e.into_down()))?
        {
            total += part.len() as u64;
            if limit > 0 && total > limit {
                return Err(ReceiveError::TooLarge);
            }
            if body.file.is_none() && in_memory + part.len() <= memory {
                in_memory += part.len();
                body.memory.push(part);
                continue;
            }
            body.spill(&part).await.map_err(ReceiveError::Failed)?;
        }
        Ok(body)
    }

    async fn spill(&mut self, part: &[u8]) -> Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = tempfile::tempfile().map_err(|e| {
                    Error::because(
                        ErrorType::InternalError,
                        "creating a temporary file for a request body",
                        e,
                    )
                })?;
                self.file.insert(tokio::fs::File::from_std(file))
            }
        };
        file.write_all(part).await.map_err(|e| {
            Error::because(
                ErrorType::InternalError,
                "writing a request body to its temporary file",
                e,
            )
        })
    }

    /// Starts again from the first part (a new attempt to reach an upstream).
    pub(crate) fn rewind(&mut self) {
        self.next = 0;
        self.file_started = false;
    }

    /// The next part to forward, or `None` at the end.
    pub(crate) async fn next_part(&mut self) -> Result<Option<Bytes>> {
        if let Some(part) = self.memory.get(self.next) {
            self.next += 1;
            return Ok(Some(part.clone()));
        }
        let Some(file) = &mut self.file else {
            return Ok(None);
        };
        let read_error = |e| {
            Error::because(
                ErrorType::InternalError,
                "reading a request body from its temporary file",
                e,
            )
        };
        if !self.file_started {
            file.flush().await.map_err(read_error)?;
            file.seek(SeekFrom::Start(0)).await.map_err(read_error)?;
            self.file_started = true;
        }
        let mut part = BytesMut::zeroed(FILE_PART);
        let n = file.read(&mut part).await.map_err(read_error)?;
        if n == 0 {
            return Ok(None);
        }
        part.truncate(n);
        Ok(Some(part.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_parts(body: &mut BufferedBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(part) = body.next_part().await.unwrap() {
            out.extend_from_slice(&part);
        }
        out
    }

    #[tokio::test]
    async fn parts_come_back_in_order_from_memory_then_the_file_on_every_attempt() {
        let mut body = BufferedBody {
            memory: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")],
            file: None,
            next: 0,
            file_started: false,
        };
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        body.spill(&big[..100_000]).await.unwrap();
        body.spill(&big[100_000..]).await.unwrap();
        let mut expected = b"abcdef".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(all_parts(&mut body).await, expected);
        body.rewind();
        assert_eq!(all_parts(&mut body).await, expected, "a second attempt");
    }
}
