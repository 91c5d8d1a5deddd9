//! Where the state store lives: `sqlite://path/to/state.db`, a bare file path, or
//! `postgres://...`, as given by `--state` or `TETHER_STATE`.
//!
//! A PostgreSQL URL may carry a password; [`StoreUrl`]'s `Display` and `Debug` never show it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::store::StoreError;

/// The state file used when no location is given, relative to the current directory.
pub const DEFAULT_STATE_PATH: &str = ".tether/state.db";

/// A parsed state store location.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite database file; created, with its parent folders, when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl StoreUrl {
    /// Parses a location: `sqlite://path`, `sqlite:path`, `postgres://...`,
    /// `postgresql://...`, or a bare file path.
    pub fn parse(text: &str) -> Result<StoreUrl, StoreError> {
        let text = text.trim();
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: redact(text),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("the location is empty"));
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_owned()));
        }
        if lower.starts_with("sqlite:") {
            let rest = &text["sqlite:".len()..];
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.contains('?') {
                return Err(invalid("SQLite locations take no query parameters"));
            }
            if path.is_empty() {
                return Err(invalid("the SQLite location names no file"));
            }
            if path == ":memory:" {
                return Err(invalid(
                    "an in-memory database would lose the state when tether exits",
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(invalid(&format!(
                "unsupported scheme `{scheme}`: use sqlite://, postgres:// or a file path"
            )));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(text)))
    }

    /// The SQLite file if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreUrl::Sqlite(path) => Some(path),
            StoreUrl::Postgres(_) => None,
        }
    }
}

impl Default for StoreUrl {
    /// `.tether/state.db` under the current directory.
    fn default() -> Self {
        StoreUrl::Sqlite(PathBuf::from(DEFAULT_STATE_PATH))
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(text)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// The URL with the password of its user info replaced by `***`, and every query parameter
/// whose name mentions a password or secret hidden likewise.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _))
                        if ["password", "secret", "key"]
                            .iter()
                            .any(|word| name.to_ascii_lowercase().contains(word)) =>
                    {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(
            StoreUrl::parse("sqlite://state/sync.db").ok(),
            Some(StoreUrl::Sqlite(PathBuf::from("state/sync.db")))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/tether/state.db").ok(),
            Some(StoreUrl::Sqlite(PathBuf::from("/var/lib/tether/state.db")))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:state.db").ok(),
            Some(StoreUrl::Sqlite(PathBuf::from("state.db")))
        );
        assert_eq!(
            StoreUrl::parse("my state.db").ok(),
            Some(StoreUrl::Sqlite(PathBuf::from("my state.db")))
        );
        assert_eq!(
            StoreUrl::parse("postgres://tether@db.internal/tether").ok(),
            Some(StoreUrl::Postgres(
                "postgres://tether@db.internal/tether".into()
            ))
        );
        assert!(matches!(
            StoreUrl::parse("PostgreSQL://db/tether"),
            Ok(StoreUrl::Postgres(_))
        ));
        assert_eq!(
            StoreUrl::default(),
            StoreUrl::Sqlite(PathBuf::from(".tether/state.db"))
        );
    }

    #[test]
    fn refuses_what_it_cannot_open() {
        for text in [
            "",
            "  ",
            "sqlite://",
            "sqlite::memory:",
            "mysql://db/x",
            "sqlite://a.db?mode=ro",
        ] {
            let error = StoreUrl::parse(text).err();
            assert!(
                matches!(error, Some(StoreError::InvalidUrl { .. })),
                "{text:?} gave {error:?}"
            );
        }
    }

    #[test]
    fn never_shows_a_password() {
        let url = StoreUrl::parse(
            "postgres://tether:hunter2@db:5432/tether?sslpassword=pw2&sslmode=require",
        )
        .ok();
        let shown = format!(
            "{} {:?}",
            url.clone().map(|u| u.to_string()).unwrap_or_default(),
            url
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("pw2"), "{shown}");
        assert!(
            shown.contains("postgres://tether:***@db:5432/tether?sslpassword=***&sslmode=require")
        );
        let error = StoreUrl::parse("mysql://root:hunter2@db/x")
            .err()
            .map(|e| e.to_string());
        assert!(!error.unwrap_or_default().contains("hunter2"));
    }
}
