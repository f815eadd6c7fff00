//! The one error type of configuration loading. Whatever went wrong — the
//! file, the TOML syntax, a type, an unknown or missing key, a value that
//! parses but makes no sense — the operator gets `file:line:column: key:
//! message`, so they can jump straight to the spot.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of problem a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read (missing, unreadable, not UTF-8).
    Io,
    /// The text is not valid TOML.
    Syntax,
    /// A key the configuration does not know (often a typo).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong TOML type or out of its type's range.
    Type,
    /// A well-typed value that is not acceptable (bad domain, zero timeout…).
    Invalid,
}

/// A configuration error that names where it is: file, line, column and
/// the dotted key (`gateway.keep_alive_interval`, `tls.certificate[1].cert`).
///
/// Line and column are 1-based; the column counts characters. Any of the
/// location parts can be absent (an I/O error has no line; a syntax error
/// in a place no key can be named has no key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    file: Option<PathBuf>,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            file: None,
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    pub(crate) fn io(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError::new(ConfigErrorKind::Io, message).with_file(Some(file))
    }

    pub(crate) fn with_file(mut self, file: Option<&Path>) -> ConfigError {
        self.file = file.map(Path::to_path_buf);
        self
    }

    pub(crate) fn with_position(mut self, position: Option<(usize, usize)>) -> ConfigError {
        if let Some((line, column)) = position {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    pub(crate) fn with_key(mut self, key: Option<String>) -> ConfigError {
        self.key = key.filter(|k| !k.is_empty());
        self
    }

    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The file the configuration came from; `None` for text given directly.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// 1-based line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// 1-based column, in characters.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// Dotted key path, with array indices: `tls.certificate[0].domain`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The problem itself, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => f.write_str("<config>")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
