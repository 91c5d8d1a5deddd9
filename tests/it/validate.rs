//! `tether validate` as a user meets it: every check has a broken fixture under
//! `tests/validate/` whose `# expect:` line names the diagnostic code and where it must point,
//! hostile inputs fail fast with a clear error, and the command's output and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use tether_engine::spec::diagnostic::{Diagnostic, Severity};
use tether_engine::spec::load::Project;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate")
}

/// What a fixture expects: `clean`, or `error[code] line:column` (several lines allowed).
#[derive(Debug, PartialEq)]
enum Expect {
    Clean,
    Diagnostic {
        severity: Severity,
        code: String,
        line: u32,
        column: u32,
    },
}

fn expectations(path: &Path) -> Vec<Expect> {
    let bytes = std::fs::read(path).expect("fixture readable");
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .map(|spec| {
            if spec.trim() == "clean" {
                return Expect::Clean;
            }
            let (head, position) = spec.split_once(' ').expect("`severity[code] line:column`");
            let (severity, code) = head
                .trim_end_matches(']')
                .split_once('[')
                .expect("`severity[code]`");
            let (line, column) = position.trim().split_once(':').expect("`line:column`");
            Expect::Diagnostic {
                severity: if severity == "warning" {
                    Severity::Warning
                } else {
                    Severity::Error
                },
                code: code.to_owned(),
                line: line.parse().expect("line number"),
                column: column.parse().expect("column number"),
            }
        })
        .collect()
}

fn diagnostics_of(fixture: &Path) -> Vec<Diagnostic> {
    let project = Project::load_paths(&fixtures_dir(), &[fixture.to_path_buf()]);
    tether_engine::validate::diagnostics(&project)
}

#[test]
fn every_fixture_reports_what_it_expects() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 20,
        "expected a fixture per check, found {}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let expected = expectations(fixture);
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            fixture.display()
        );
        let found = diagnostics_of(fixture);
        let in_fixture: Vec<&Diagnostic> = found.iter().filter(|d| d.path == *fixture).collect();
        for expect in &expected {
            match expect {
                Expect::Clean => {
                    let errors: Vec<_> = found.iter().filter(|d| d.is_error()).collect();
                    if !errors.is_empty() {
                        failures.push(format!(
                            "{}: expected no errors, got {errors:#?}",
                            fixture.display()
                        ));
                    }
                }
                Expect::Diagnostic {
                    severity,
                    code,
                    line,
                    column,
                } => {
                    let hit = in_fixture.iter().any(|d| {
                        d.severity == *severity
                            && d.code == code
                            && d.line == *line
                            && d.column == *column
                    });
                    if !hit {
                        failures.push(format!(
                            "{}: expected {code} at {line}:{column}, got {:#?}",
                            fixture.display(),
                            in_fixture
                                .iter()
                                .map(|d| format!(
                                    "{}[{}] {}:{} {}",
                                    d.severity.as_str(),
                                    d.code,
                                    d.line,
                                    d.column,
                                    d.message
                                ))
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }
        // A broken fixture must break only in the way it says, so each check is tested alone.
        let unexpected: Vec<String> = in_fixture
            .iter()
            .filter(|d| d.is_error())
            .filter(|d| {
                !expected
                    .iter()
                    .any(|e| matches!(e, Expect::Diagnostic { code, .. } if code == d.code))
            })
            .map(|d| {
                format!(
                    "{}[{}] {}:{} {}",
                    d.severity.as_str(),
                    d.code,
                    d.line,
                    d.column,
                    d.message
                )
            })
            .collect();
        if !unexpected.is_empty() {
            failures.push(format!(
                "{}: unexpected errors {unexpected:#?}",
                fixture.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

fn only_error(path: &Path) -> Diagnostic {
    let project = Project::load_paths(&fixtures_dir(), &[path.to_path_buf()]);
    let errors: Vec<Diagnostic> = tether_engine::validate::diagnostics(&project)
        .into_iter()
        .filter(|d| d.path == path)
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error expected for {}: {errors:#?}",
        path.display()
    );
    errors.into_iter().next().expect("one error")
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 9].join(", ")
        ));
    }
    let error = only_error(&scratch_file("bomb.yaml", text.as_bytes()));
    assert_eq!(error.code, "yaml-syntax");
    assert!(error.line > 0, "the error points into the file: {error:?}");
}

#[test]
fn a_huge_file_is_refused_before_parsing() {
    let big = vec![b'#'; 50 * 1024 * 1024];
    let error = only_error(&scratch_file("huge.yaml", &big));
    assert_eq!(error.code, "file-too-large");
    assert!(
        error.message.contains("52428800 bytes"),
        "{}",
        error.message
    );
}

#[test]
fn deep_nesting_is_refused() {
    for (name, text) in [
        (
            "deep-flow.yaml",
            format!("flow: {}x{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "deep-block.yaml",
            format!("flow:\n{}x\n", "- ".repeat(10_000)),
        ),
        (
            "deep-map.yaml",
            (0..1_500)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect::<String>(),
        ),
    ] {
        let error = only_error(&scratch_file(name, text.as_bytes()));
        assert_eq!(error.code, "yaml-syntax", "{name}: {error:?}");
        assert!(
            error.message.contains("nest") || error.message.contains("depth"),
            "{name}: {}",
            error.message
        );
    }
}

fn tether(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tether");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_command_shows_the_line_a_caret_and_help() {
    let (code, stdout, _) = tether(&[
        "validate",
        "--flows",
        "tests/validate",
        "tests/validate/unknown-key.yaml",
    ]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(
            "tests/validate/unknown-key.yaml:14:5: error[unknown-key]: unknown key `conflikt`"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("14 |     conflikt: source-wins\n   |     ^^^^^^^^\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("= help: did you mean `conflict`?"),
        "{stdout}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with("1 file, 0 mappings, 0 rules: 1 error, 0 warnings"),
        "{stdout}"
    );
}

#[test]
fn json_output_lists_the_same_diagnostics() {
    let (code, stdout, _) = tether(&[
        "validate",
        "--format",
        "json",
        "--flows",
        "tests/validate",
        "tests/validate/unknown-key.yaml",
    ]);
    assert_eq!(code, 1);
    let value: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let first = &value[0];
    assert_eq!(first["code"], "unknown-key");
    assert_eq!(first["line"], 14);
    assert_eq!(first["column"], 5);
    assert_eq!(first["severity"], "error");
    assert_eq!(first["help"], "did you mean `conflict`?");
    assert!(
        first["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("unknown-key.yaml"))
    );
}

#[test]
fn a_clean_flow_exits_zero_and_usage_errors_exit_two() {
    let (code, stdout, _) = tether(&[
        "validate",
        "--flows",
        "tests/validate",
        "tests/validate/valid.yaml",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 errors"), "{stdout}");
    let (code, _, stderr) = tether(&["validate", "--format", "yaml"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn the_checked_in_schemas_are_current() {
    for (name, text) in tether_engine::spec::schema::schemas() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas")
            .join(name);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == text,
            "{} is stale: run `cargo run -- schema`",
            path.display()
        );
    }
}
