//! Diagnostics: what `validate` (and every command that loads flows) tells a user about a
//! file, with a stable code, a position, the offending line with a caret under the spot, and
//! a help line where a fix is likely.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::spec::node::Pos;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found in one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: u32,
    pub column: u32,
    #[serde(skip)]
    pub len: u32,
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(
        path: &Path,
        pos: Option<Pos>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let pos = pos.unwrap_or(Pos {
            line: 0,
            column: 0,
            len: 0,
        });
        Diagnostic {
            path: path.to_path_buf(),
            line: pos.line,
            column: pos.column,
            len: pos.len,
            severity: Severity::Error,
            code,
            message: message.into(),
            help: None,
        }
    }

    pub fn warning(
        path: &Path,
        pos: Option<Pos>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, pos, code, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic as a user sees it:
    ///
    /// ```text
    /// flows/a.yaml:12:9: error[unknown-key]: unknown key `tagret`
    ///    |
    /// 12 |       - tagret: name
    ///    |         ^^^^^^
    ///    = help: did you mean `target`?
    /// ```
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = String::new();
        let location = if self.line > 0 {
            format!("{}:{}:{}", self.path.display(), self.line, self.column)
        } else {
            self.path.display().to_string()
        };
        let _ = writeln!(
            out,
            "{location}: {}[{}]: {}",
            self.severity.as_str(),
            self.code,
            self.message
        );
        let line_text = source
            .filter(|_| self.line > 0)
            .and_then(|text| text.lines().nth(self.line as usize - 1));
        let gutter = self.line.to_string().len();
        if let Some(line_text) = line_text {
            let line_text = line_text.trim_end_matches('\r');
            let shown: String = line_text.chars().take(200).collect();
            let column = (self.column.max(1) - 1) as usize;
            let rest = shown.chars().count().saturating_sub(column).max(1);
            let carets = (self.len.max(1) as usize).min(rest);
            let indent: String = shown
                .chars()
                .take(column)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{} | {shown}", self.line);
            let _ = writeln!(out, "{:gutter$} | {indent}{}", "", "^".repeat(carets));
        }
        if let Some(help) = &self.help {
            if line_text.is_some() {
                let _ = writeln!(out, "{:gutter$} = help: {help}", "");
            } else {
                let _ = writeln!(out, "  = help: {help}");
            }
        }
        out
    }
}

/// Counts of a validation run, for the one-line summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub files: usize,
    pub mappings: usize,
    pub rules: usize,
    pub errors: usize,
    pub warnings: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn plural(n: usize, word: &str) -> String {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        }
        write!(
            f,
            "{}, {}, {}: {}, {}",
            plural(self.files, "file"),
            plural(self.mappings, "mapping"),
            plural(self.rules, "rule"),
            plural(self.errors, "error"),
            plural(self.warnings, "warning"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_line_and_a_caret() {
        let d = Diagnostic::error(
            Path::new("f.yaml"),
            Some(Pos {
                line: 2,
                column: 5,
                len: 6,
            }),
            "unknown-key",
            "unknown key `tagret`",
        )
        .with_help("did you mean `target`?");
        let text = d.render(Some("a: 1\n  - tagret: x\n"));
        assert_eq!(
            text,
            "f.yaml:2:5: error[unknown-key]: unknown key `tagret`\n  |\n2 |   - tagret: x\n  |     ^^^^^^\n  = help: did you mean `target`?\n"
        );
    }

    #[test]
    fn summary_reads_well() {
        let s = Summary {
            files: 1,
            mappings: 19,
            rules: 200,
            errors: 0,
            warnings: 1,
        };
        assert_eq!(
            s.to_string(),
            "1 file, 19 mappings, 200 rules: 0 errors, 1 warning"
        );
    }
}
