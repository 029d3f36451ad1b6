//! Config errors that point at the file, line and key, and say what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySegment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Where a value lives in the config, e.g. `sites.docs.locations[2].proxy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<KeySegment>);

impl KeyPath {
    /// The empty path (the document root).
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended with a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(KeySegment::Key(key.to_string()));
        next
    }

    /// This path extended with an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(KeySegment::Index(index));
        next
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[KeySegment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                KeySegment::Key(key) if i == 0 => write!(f, "{}", quote_key(key))?,
                KeySegment::Key(key) => write!(f, ".{}", quote_key(key))?,
                KeySegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// The key holding the bad value.
    pub key: KeyPath,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if self.key.segments().is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration (compilation reports them all, not just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error.
    pub fn one(error: ConfigError) -> Self {
        Self(vec![error])
    }

    /// The errors, in the order found.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Collects problems while compiling, each at a key path.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<(KeyPath, String)>);

impl Problems {
    pub(crate) fn push(&mut self, key: KeyPath, message: impl Into<String>) {
        self.0.push((key, message.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A duration option: `default` when unset, reported (and `default`) when malformed.
    pub(crate) fn duration(
        &mut self,
        text: Option<&str>,
        default: std::time::Duration,
        key: KeyPath,
    ) -> std::time::Duration {
        let Some(text) = text else { return default };
        super::units::parse_duration(text).unwrap_or_else(|e| {
            self.push(key, e);
            default
        })
    }

    /// A size option in bytes: `None` when unset or malformed (malformed is reported).
    pub(crate) fn size(&mut self, text: Option<&str>, key: KeyPath) -> Option<u64> {
        super::units::parse_size(text?)
            .map_err(|e| self.push(key, e))
            .ok()
    }

    /// Turns the problems into located errors, using `source` (when present) to find lines.
    pub(crate) fn locate(self, source: Option<&SourceText<'_>>) -> ConfigErrors {
        let errors = self
            .0
            .into_iter()
            .map(|(key, message)| ConfigError {
                file: source.and_then(|s| s.file.map(Path::to_path_buf)),
                line: source.and_then(|s| s.line_of_key(&key)),
                key,
                message,
            })
            .collect();
        ConfigErrors(errors)
    }
}

/// The text of a config file, to turn byte offsets and key paths into line numbers.
pub(crate) struct SourceText<'a> {
    pub(crate) file: Option<&'a Path>,
    pub(crate) text: &'a str,
}

impl<'a> SourceText<'a> {
    /// 1-based line of a byte offset.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Line of the deepest part of `key` present in the document (a missing key points at
    /// its parent table).
    pub(crate) fn line_of_key(&self, key: &KeyPath) -> Option<usize> {
        let root = DeTable::parse(self.text).ok()?;
        let mut best: Option<usize> = None;
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for segment in key.segments() {
            let next = match (segment, table, value.map(Spanned::get_ref)) {
                (KeySegment::Key(k), Some(t), _) => find_key(t, k),
                (KeySegment::Index(i), _, Some(DeValue::Array(items))) => {
                    items.get(*i).map(|item| (item.span().start, item))
                }
                _ => None,
            };
            let Some((start, found)) = next else { break };
            best = Some(start);
            value = Some(found);
            table = match found.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        best.map(|offset| self.line_of_offset(offset))
    }

    /// The key whose entry holds `offset` (for serde errors, which only carry spans): at each
    /// level, the last entry that starts at or before the offset.
    pub(crate) fn key_at_offset(&self, offset: usize) -> KeyPath {
        let Ok(root) = DeTable::parse(self.text) else {
            return KeyPath::root();
        };
        let mut path = KeyPath::root();
        let mut current: &DeTable<'_> = root.get_ref();
        loop {
            let entry = current
                .iter()
                .filter(|(k, _)| k.span().start <= offset)
                .max_by_key(|(k, _)| k.span().start);
            let Some((k, mut value)) = entry else {
                return path;
            };
            path = path.key(k.get_ref());
            while let DeValue::Array(items) = value.get_ref() {
                let item = items
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| item.span().start <= offset)
                    .max_by_key(|(_, item)| item.span().start);
                let Some((i, item)) = item else { return path };
                path = path.index(i);
                value = item;
            }
            match value.get_ref() {
                DeValue::Table(t) => current = t,
                _ => return path,
            }
        }
    }
}

fn find_key<'t, 'i>(
    table: &'t DeTable<'i>,
    key: &str,
) -> Option<(usize, &'t Spanned<DeValue<'i>>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, v)| (k.span().start, v))
}
