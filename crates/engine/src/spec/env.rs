//! `${VAR}` and `${VAR:-default}` interpolation, allowed only where URLs and credentials go.
//!
//! [`EnvString`] is the one type of the spec model that reads the environment. Every other
//! string is taken literally, and `validate` reports `${` in any of them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A string that may name environment variables: `${VAR}` or `${VAR:-default}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvString(pub String);

impl JsonSchema for EnvString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvString".into()
    }
    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Text with `${VAR}` or `${VAR:-default}` read from the environment",
        })
    }
}

/// One piece of an [`EnvString`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    Var {
        name: &'a str,
        default: Option<&'a str>,
    },
}

/// Why an [`EnvString`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("`${{` is not closed by `}}`")]
    Unclosed,
    #[error("`{0}` is not a valid environment variable name")]
    BadName(String),
    #[error("environment variable `{0}` is not set")]
    Unset(String),
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl EnvString {
    /// Splits the string into text and variables.
    pub fn parts(&self) -> Result<Vec<Part<'_>>, EnvError> {
        let mut parts = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(&rest[..start]));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(EnvError::Unclosed)?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(EnvError::BadName(name.to_owned()));
            }
            parts.push(Part::Var { name, default });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest));
        }
        Ok(parts)
    }

    /// The variables the string needs that have no default.
    pub fn required_vars(&self) -> Vec<&str> {
        self.parts()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p {
                Part::Var {
                    name,
                    default: None,
                } => Some(name),
                _ => None,
            })
            .collect()
    }

    /// Resolves the string with `lookup` (usually `std::env::var`). An empty variable counts
    /// as unset, so `${VAR:-default}` falls back as in the shell.
    pub fn resolve_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<String, EnvError> {
        let mut out = String::with_capacity(self.0.len());
        for part in self.parts()? {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, default } => {
                    match (lookup(name).filter(|v| !v.is_empty()), default) {
                        (Some(value), _) => out.push_str(&value),
                        (None, Some(default)) => out.push_str(default),
                        (None, None) => return Err(EnvError::Unset(name.to_owned())),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Resolves the string from the process environment.
    pub fn resolve(&self) -> Result<String, EnvError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "HOST").then(|| "example.test".to_owned())
    }

    #[test]
    fn resolves_variables_and_defaults() {
        let s = EnvString("https://${HOST}:${PORT:-8443}/api".into());
        assert_eq!(
            s.resolve_with(lookup).unwrap(),
            "https://example.test:8443/api"
        );
        assert_eq!(s.required_vars(), vec!["HOST"]);
    }

    #[test]
    fn reports_unset_and_malformed() {
        assert_eq!(
            EnvString("${NOPE}".into()).resolve_with(lookup),
            Err(EnvError::Unset("NOPE".into()))
        );
        assert_eq!(
            EnvString("${NOPE".into()).resolve_with(lookup),
            Err(EnvError::Unclosed)
        );
        assert_eq!(
            EnvString("${1X}".into()).resolve_with(lookup),
            Err(EnvError::BadName("1X".into()))
        );
        assert_eq!(
            EnvString("plain".into()).resolve_with(lookup).unwrap(),
            "plain"
        );
    }
}
