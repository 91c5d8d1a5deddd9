//! Diagnostics: what `validate` (and every command that loads flows) tells a user about a
//! file, with a stable code, a position, the offending line with a caret under the spot, and
//! a help line where a fix is likely.
//!
//! Every code is an entry of one table, [`Code`]: its text, its default severity, what it
//! means and how its broken example is tested. A diagnostic can only be made with a
//! [`Code`], so no code exists outside the table; the integration tests fail when an entry
//! has no broken example under `tests/validate/` or no row in the README's table.

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

/// How a code's broken example is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    /// A committed file under `tests/validate/` whose `# expect:` line names the code.
    Fixture,
    /// The test generates the input, which cannot be a committed file (a file over the size
    /// limit, a path that cannot be read).
    Generated,
}

macro_rules! codes {
    ($($variant:ident = $text:literal, $severity:ident, $example:ident, $meaning:literal;)*) => {
        /// A diagnostic code: the one table of every code `validate` reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(#[doc = $meaning] $variant,)*
        }

        impl Code {
            /// Every code, in the order of the table.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable text users see (`unknown-key`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// The severity the code is reported with unless the check says otherwise
            /// (`duplicate-mapping` across flows is a warning).
            pub const fn severity(self) -> Severity {
                match self {
                    $(Code::$variant => Severity::$severity,)*
                }
            }

            /// What the code means, in one line.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => $meaning,)*
                }
            }

            /// How the code's broken example is tested.
            pub const fn example(self) -> Example {
                match self {
                    $(Code::$variant => Example::$example,)*
                }
            }
        }
    };
}

codes! {
    // variant = "code", default severity, example, "meaning";
    Io = "io", Error, Generated,
        "a file or directory that cannot be read";
    FileTooLarge = "file-too-large", Error, Generated,
        "a file over the 2 MiB a spec file may have";
    BinaryFile = "binary-file", Error, Fixture,
        "a file with a NUL byte: binary, not YAML";
    NotUtf8 = "not-utf8", Error, Fixture,
        "a file that is not UTF-8";
    YamlSyntax = "yaml-syntax", Error, Fixture,
        "not valid YAML, or over a budget (alias bomb, nesting deeper than 32 levels)";
    UnknownKey = "unknown-key", Error, Fixture,
        "a key the schema does not have";
    MissingKey = "missing-key", Error, Fixture,
        "a required key is missing";
    DuplicateKey = "duplicate-key", Error, Fixture,
        "a key given twice in one mapping";
    InvalidType = "invalid-type", Error, Fixture,
        "a value of the wrong kind (a string where a number goes)";
    InvalidValue = "invalid-value", Error, Fixture,
        "a value of the right kind the schema refuses";
    UnknownVariant = "unknown-variant", Error, Fixture,
        "a value that is not one of the allowed names";
    NameMismatch = "name-mismatch", Warning, Fixture,
        "a flow or system name differs from its file name";
    BadSchedule = "bad-schedule", Error, Fixture,
        "a schedule that is not a duration within range";
    UnknownSystem = "unknown-system", Error, Fixture,
        "a flow names a system that has no system file";
    UnknownEntity = "unknown-entity", Error, Fixture,
        "an entity the system file does not have";
    UnknownField = "unknown-field", Error, Fixture,
        "a path names a field the entity does not have";
    DuplicateMapping = "duplicate-mapping", Error, Fixture,
        "two mappings share a name in one flow (a warning across flows)";
    InvalidJsonpath = "invalid-jsonpath", Error, Fixture,
        "a JSONPath that does not parse, or a query where a target must name one field";
    InvalidTemplate = "invalid-template", Error, Fixture,
        "a template that does not compile, or uses an unknown filter or function";
    UnknownVariable = "unknown-variable", Error, Fixture,
        "a template uses a name that does not exist";
    SourceAndTemplate = "source-and-template", Error, Fixture,
        "a rule has both `source` and `template`";
    MissingSource = "missing-source", Error, Fixture,
        "a rule has neither `source` nor `template`";
    DefaultTypeMismatch = "default-type-mismatch", Error, Fixture,
        "a default that does not fit the rule's type";
    ValueMapTypeMismatch = "value-map-type-mismatch", Error, Fixture,
        "a value map entry that does not fit the rule's type";
    MissingInverse = "missing-inverse", Error, Fixture,
        "a two-way rule that cannot be applied backwards";
    ReadOnlyTarget = "read-only-target", Error, Fixture,
        "a rule writes a field that is read-only";
    ChangesOnlyTwoWay = "changes-only-two-way", Error, Fixture,
        "`changes_only` on a rule that flows both ways";
    UnboundedCost = "unbounded-cost", Warning, Fixture,
        "a path with a recursive descent (`..`) or a template whose `replace` steps lengthen the text: its cost grows with the record (bounded per record, see \"Writing rules\")";
    MissingRef = "missing-ref", Error, Fixture,
        "a `reference` rule without `ref`";
    UnknownMappingRef = "unknown-mapping-ref", Error, Fixture,
        "a `ref` names a mapping that does not exist";
    RefIdentityMismatch = "ref-identity-mismatch", Error, Fixture,
        "a `ref` names a mapping of another thing than the field refers to";
    RefCycle = "ref-cycle", Error, Fixture,
        "references between mappings form a cycle";
    UnknownRefKey = "unknown-ref-key", Error, Fixture,
        "a `ref_key` the referenced mapping does not sync";
    RequiredFieldUnmapped = "required-field-unmapped", Error, Fixture,
        "the system requires a field on create and no rule writes it";
    IdentityConflict = "identity-conflict", Error, Fixture,
        "two mappings write the same field of one entity as different real-world things";
    EnvUnset = "env-unset", Warning, Fixture,
        "a system file needs an environment variable that is not set (an error at run time)";
    InvalidInterpolation = "invalid-interpolation", Error, Fixture,
        "a malformed `${VAR}`";
    InterpolationNotAllowed = "interpolation-not-allowed", Error, Fixture,
        "`${VAR}` outside base URLs and credentials";
}

impl Code {
    /// The code with this text, if there is one.
    pub fn from_text(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|code| code.as_str() == text)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Codes order by their text, so diagnostics at one spot sort the same way whatever the
/// order of the table.
impl Ord for Code {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Code {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
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
    pub code: Code,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(path: &Path, pos: Option<Pos>, code: Code, message: impl Into<String>) -> Self {
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

    pub fn warning(path: &Path, pos: Option<Pos>, code: Code, message: impl Into<String>) -> Self {
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
            Code::UnknownKey,
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
