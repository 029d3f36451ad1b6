//! The error type of this crate.

use std::io;

/// Everything that can go wrong while starting or extending a [`crate::FakeTailnet`].
#[derive(Debug, thiserror::Error)]
pub enum FakeTailnetError {
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "bind DNS UDP socket 127.100.100.100:0".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No free loopback address/port combination was found within the retry budget.
    #[error("no free loopback address for {what} after {attempts} attempts")]
    AddressesExhausted {
        /// What was being bound.
        what: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A peer name is not a valid DNS label or is already taken.
    #[error("invalid peer name {name:?}: {reason}")]
    InvalidPeerName {
        /// The offending name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The fixed capacity for peers added at runtime is used up.
    #[error("too many peers added at runtime (limit {limit})")]
    TooManyPeers {
        /// The limit.
        limit: usize,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Building the rustls server configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The background runtime thread failed to start the tailnet or died.
    #[error("background runtime thread failed: {0}")]
    Thread(String),
}

impl FakeTailnetError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
