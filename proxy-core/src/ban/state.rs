//! The bans' state file: JSON, written to a temporary file beside it and renamed over it,
//! so a reader (or a restart after a crash) sees the old bans or the new ones, never half.
//!
//! ```json
//! {"version":1,"bans":[{"ip":"192.0.2.7","until":1764750000,"rule":"errors"}]}
//! ```

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Ban;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading, writing or renaming failed.
    #[error("ban state file `{path}`: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a state file this version reads.
    #[error("ban state file `{path}` is damaged or of another version: {message}")]
    Format {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    bans: Vec<StoredBan>,
}

#[derive(Serialize, Deserialize)]
struct StoredBan {
    ip: IpAddr,
    until: u64,
    rule: String,
}

/// The bans in the file at `path`; none if it does not exist.
pub(super) fn read(path: &Path) -> Result<Vec<Ban>, StateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let format = |message: String| StateFileError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    if file.version != VERSION {
        return Err(format(format!("version {}", file.version)));
    }
    Ok(file
        .bans
        .into_iter()
        .map(|b| Ban {
            ip: b.ip,
            until: b.until,
            rule: Arc::from(b.rule.as_str()),
        })
        .collect())
}

/// Writes `bans` to `path` atomically (temporary file in the same directory, flushed to
/// disk, then renamed over `path`).
pub(super) fn write(path: &Path, bans: &[Ban]) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = StateFile {
        version: VERSION,
        bans: bans
            .iter()
            .map(|b| StoredBan {
                ip: b.ip,
                until: b.until,
                rule: b.rule.to_string(),
            })
            .collect(),
    };
    let mut text = serde_json::to_vec(&file).map_err(|e| io(std::io::Error::other(e)))?;
    text.push(b'\n');
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    temp.write_all(&text).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_empty_and_damaged_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        assert!(read(&path).unwrap().is_empty());
        std::fs::write(&path, "{\"version\":1,\"bans\":[{\"ip\":").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("bans.json") && e.contains("damaged"), "{e}");
        std::fs::write(&path, "{\"version\":7,\"bans\":[]}").unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn written_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let ban = Ban {
            ip: "2001:db8::".parse().unwrap(),
            until: 4_000_000_000,
            rule: Arc::from("trap"),
        };
        write(&path, std::slice::from_ref(&ban)).unwrap();
        assert_eq!(read(&path).unwrap(), vec![ban]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }
}
