//! A fake tailscaled LocalAPI on a unix socket: answers `GET /localapi/v0/status` with a
//! JSON body whose `BackendState` tests can change while it runs.
//!
//! It runs on its own thread with blocking I/O, so it works whether or not the caller has a
//! tokio runtime (and is never stalled by a test blocking one).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::FakeTailnetError;

/// A running fake LocalAPI. Dropping it stops the server and removes the socket.
#[derive(Debug)]
pub struct FakeLocalApi {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<String>,
    requests: AtomicUsize,
    stop: AtomicBool,
}

impl FakeLocalApi {
    /// Serves on a new socket at `path` (an old socket file there is replaced), reporting
    /// `state` (`Running`, `Starting`, `NeedsLogin`, `Stopped`...).
    pub fn start(path: impl Into<PathBuf>, state: &str) -> Result<Self, FakeTailnetError> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| FakeTailnetError::io("bind the fake LocalAPI socket", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(state.to_owned()),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-localapi".into())
            .spawn(move || serve(listener, worker))
            .map_err(|e| FakeTailnetError::io("spawn the fake LocalAPI thread", e))?;
        Ok(Self {
            path,
            shared,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the reported `BackendState`.
    pub fn set_state(&self, state: &str) {
        *self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = state.to_owned();
    }

    /// The reported `BackendState`.
    pub fn state(&self) -> String {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Status requests answered so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FakeLocalApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the stop flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(stream) = stream {
            let _ = answer(stream, &shared);
        }
    }
}

/// Reads one request head and answers it; the connection is closed after.
fn answer(stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let (status, body) = if path == "/localapi/v0/status" {
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let state = shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let body = serde_json::json!({
            "Version": "fake",
            "BackendState": state,
            "Self": { "HostName": "edge", "Online": state == "Running" },
        });
        ("200 OK", body.to_string())
    } else {
        ("404 Not Found", String::from("{\"error\":\"not found\"}"))
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn status(path: &Path) -> String {
        let mut stream = UnixStream::connect(path).unwrap();
        stream
            .write_all(b"GET /localapi/v0/status HTTP/1.0\r\nHost: local-tailscaled.sock\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn reports_the_state_tests_set() {
        let dir = std::env::temp_dir().join(format!("fake-localapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let api = FakeLocalApi::start(dir.join("ts.sock"), "Starting").unwrap();
        assert!(status(api.path()).contains("\"BackendState\":\"Starting\""));
        api.set_state("Running");
        assert!(status(api.path()).contains("\"BackendState\":\"Running\""));
        assert_eq!(api.requests(), 2);
        let path = api.path().to_owned();
        drop(api);
        assert!(!path.exists());
    }
}
