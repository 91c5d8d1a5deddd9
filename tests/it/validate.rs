//! `tether validate` as a user meets it: every code of the table has a broken example (a
//! fixture under `tests/validate/` whose `# expect:` line names the code and where it must
//! point, or an input the test generates), the text printed for every fixture is the one
//! committed beside it (`*.expected`), the README lists every code, hostile inputs fail fast
//! with a clear error, and the command's output and exit codes.
//!
//! `TETHER_BLESS=1 cargo test validate` rewrites the `*.expected` files and the README's table
//! of codes from what the code does now; review the diff before committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tether_engine::spec::diagnostic::{Code, Diagnostic, Example, Severity};
use tether_engine::spec::load::{MAX_FILE_BYTES, Project};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate")
}

/// What a fixture expects: `clean`, or `error[code] line:column` (several lines allowed).
#[derive(Debug, PartialEq)]
enum Expect {
    Clean,
    Diagnostic {
        severity: Severity,
        code: Code,
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
                code: Code::from_text(code).unwrap_or_else(|| {
                    panic!("{}: `{code}` is not a code of the table", path.display())
                }),
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

/// The fixtures: every `*.yaml` directly under `tests/validate/` (`systems/` holds the system
/// files they are checked against).
fn fixtures() -> Vec<PathBuf> {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    fixtures
}

fn blessing() -> bool {
    std::env::var_os("TETHER_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

#[test]
fn every_fixture_reports_what_it_expects() {
    let fixtures = fixtures();
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
                            && d.code == *code
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
                    .any(|e| matches!(e, Expect::Diagnostic { code, .. } if *code == d.code))
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

/// Inputs for the codes the table marks [`Example::Generated`]: each returns the diagnostics
/// of an input made on the spot. A code marked so without an arm here fails the test below.
fn generated_example(code: Code) -> Option<Vec<Diagnostic>> {
    let diagnostics = |path: &Path| {
        let project = Project::load_paths(&fixtures_dir(), &[path.to_path_buf()]);
        tether_engine::validate::diagnostics(&project)
    };
    match code {
        Code::FileTooLarge => {
            let bytes = vec![b'#'; MAX_FILE_BYTES as usize + 1];
            Some(diagnostics(&scratch_file("just-too-large.yaml", &bytes)))
        }
        Code::Io => {
            let missing = scratch_file("placeholder.yaml", b"").with_file_name("no-such-file.yaml");
            let mut found = diagnostics(&missing);
            let project = Project::load_dir(&missing.with_file_name("no-such-directory"));
            found.extend(tether_engine::validate::diagnostics(&project));
            Some(found)
        }
        _ => None,
    }
}

/// Every code `# expect:`ed by some fixture.
fn codes_with_fixtures() -> BTreeSet<Code> {
    fixtures()
        .iter()
        .flat_map(|fixture| expectations(fixture))
        .filter_map(|expect| match expect {
            Expect::Diagnostic { code, .. } => Some(code),
            Expect::Clean => None,
        })
        .collect()
}

#[test]
fn every_code_has_a_broken_example() {
    let with_fixtures = codes_with_fixtures();
    let mut failures = Vec::new();
    for &code in Code::ALL {
        match code.example() {
            Example::Fixture => {
                if !with_fixtures.contains(&code) {
                    failures.push(format!(
                        "`{code}` has no fixture: add tests/validate/{code}.yaml with \
                         `# expect: {}[{code}] line:column`",
                        code.severity().as_str()
                    ));
                }
            }
            Example::Generated => match generated_example(code) {
                None => failures.push(format!(
                    "`{code}` is marked generated, but generated_example has no input for it"
                )),
                Some(found) => {
                    if !found.iter().any(|d| d.code == code) {
                        failures.push(format!(
                            "the generated example of `{code}` did not report it: {found:#?}"
                        ));
                    }
                }
            },
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_code_table_is_sound() {
    let texts: BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(texts.len(), Code::ALL.len(), "two codes share a text");
    for &code in Code::ALL {
        let text = code.as_str();
        assert!(
            !text.is_empty()
                && text.split('-').all(|w| !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())),
            "`{text}` is not kebab-case"
        );
        assert_eq!(Code::from_text(text), Some(code));
        assert!(!code.meaning().is_empty(), "`{text}` has no meaning");
        assert!(
            !code.meaning().contains('|') && !code.meaning().contains('\n'),
            "`{text}`: a meaning is one line of a table"
        );
    }
}

/// The README's table of codes, as the table in the code says it.
fn readme_code_table() -> String {
    let mut table = String::from("| code | severity | meaning |\n|---|---|---|\n");
    for &code in Code::ALL {
        table.push_str(&format!(
            "| `{code}` | {} | {} |\n",
            code.severity().as_str(),
            code.meaning()
        ));
    }
    table
}

#[test]
fn the_readme_lists_every_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let expected = readme_code_table();
    if readme.contains(&expected) {
        return;
    }
    let header = "| code | severity | meaning |\n";
    let start = readme
        .find(header)
        .expect("the README has a table of diagnostic codes under `tether validate`");
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |i| start + i + 1);
    if blessing() {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("rewrite README.md");
        return;
    }
    panic!(
        "the README's table of diagnostic codes is not the table in \
         crates/engine/src/spec/diagnostic.rs (run with TETHER_BLESS=1 to rewrite it).\n\
         README:\n{}\nexpected:\n{expected}",
        &readme[start..end]
    );
}

/// Runs `tether validate` on one fixture as a user would, with no environment.
fn validate_output(fixture: &Path) -> String {
    let relative = fixture
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .expect("fixture under the package");
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["validate", "--flows", "tests/validate"])
        .arg(relative)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .output()
        .expect("run tether validate");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn snapshot_path(fixture: &Path) -> PathBuf {
    fixture.with_extension("expected")
}

#[test]
fn the_text_printed_for_every_fixture_is_its_snapshot() {
    let fixtures = fixtures();
    let bless = blessing();
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let printed = validate_output(fixture);
        let snapshot = snapshot_path(fixture);
        let committed = std::fs::read_to_string(&snapshot).ok();
        if committed.as_deref() == Some(printed.as_str()) {
            continue;
        }
        if bless {
            std::fs::write(&snapshot, &printed).expect("write snapshot");
            continue;
        }
        failures.push(match committed {
            None => format!("{} is missing; it would be:\n{printed}", snapshot.display()),
            Some(committed) => format!(
                "{} differs.\n--- committed\n{committed}--- printed\n{printed}",
                snapshot.display()
            ),
        });
    }
    // A snapshot without its fixture is stale.
    let wanted: BTreeSet<PathBuf> = fixtures.iter().map(|f| snapshot_path(f)).collect();
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "expected") && !wanted.contains(&path) {
            if bless {
                std::fs::remove_file(&path).expect("remove stale snapshot");
            } else {
                failures.push(format!("{} has no fixture", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(run with TETHER_BLESS=1 to rewrite the snapshots, then review the diff)",
        failures.join("\n")
    );
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
