//! Reading spec files: size, encoding and YAML budgets first, then the located node tree,
//! then the typed model. Every failure becomes a [`Diagnostic`] naming the file, line and
//! column; nothing here panics or hangs on hostile input.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::flow::FlowFile;
use crate::spec::node::{self, DeError, ErrorSink, Node, Pos};
use crate::spec::system::SystemFile;

/// The largest spec file accepted. Real flow files are a few tens of kilobytes.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// YAML parser settings: YAML 1.2 booleans only (`y` and `no` stay strings), numbers with
/// leading zeros stay strings (postal codes), duplicate keys are errors, and budgets bound
/// the work an alias bomb or a deeply nested document can cause.
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 200_000;
    budget.max_nodes = 100_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = node::MAX_DEPTH;
    budget.flow_nesting_limit = node::MAX_DEPTH;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES as usize * 4;
    budget.max_documents = 1;
    budget.max_recorded_anchor_events = 100_000;
    options.budget = Some(budget);
    options
}

/// A YAML syntax or budget error with its position.
#[derive(Debug, Clone)]
pub struct YamlError {
    /// `yaml-syntax`, or `duplicate-key` for a key given twice in one mapping.
    pub code: Code,
    pub message: String,
    pub pos: Option<Pos>,
}

/// Parses YAML text into a located node tree.
pub fn parse_yaml(text: &str) -> Result<Node, YamlError> {
    serde_saphyr::from_str_with_options::<Node>(text, yaml_options()).map_err(|error| {
        let pos = error.location().filter(|l| l.line() > 0).map(|l| {
            Pos::new(
                l.line().min(u32::MAX as u64) as u32,
                l.column().min(u32::MAX as u64) as u32,
            )
        });
        match error.without_snippet() {
            serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => YamlError {
                code: Code::DuplicateKey,
                message: format!("key `{key}` is given twice"),
                pos: pos.map(|pos| Pos {
                    len: key.chars().count().min(u32::MAX as usize) as u32,
                    ..pos
                }),
            },
            _ => YamlError {
                code: Code::YamlSyntax,
                message: plain_message(&error),
                pos,
            },
        }
    })
}

/// serde-saphyr's message without its own location suffix and snippet: the diagnostic
/// renders those itself.
fn plain_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = first.trim_start_matches("error: ");
    if first.contains("recursion limit") || first.contains("depth") {
        return format!(
            "the document is nested too deeply (at most {} levels)",
            node::MAX_DEPTH
        );
    }
    // Drop a leading "line N column M: ": the diagnostic shows the position itself.
    match first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message))
            if position
                .split(' ')
                .all(|w| w == "column" || w.chars().all(|c| c.is_ascii_digit())) =>
        {
            message.to_string()
        }
        _ => first.to_string(),
    }
}

/// Reads a spec file, refusing what cannot be one: too large, binary, or not UTF-8.
pub fn read_source(path: &Path) -> Result<String, Diagnostic> {
    let metadata = std::fs::metadata(path).map_err(|e| {
        Diagnostic::error(path, None, Code::Io, format!("cannot read the file: {e}"))
    })?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            path,
            None,
            Code::FileTooLarge,
            format!(
                "the file is {} bytes; spec files may be at most {MAX_FILE_BYTES} bytes",
                metadata.len()
            ),
        )
        .with_help("split the flow into several files"));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostic::error(path, None, Code::Io, format!("cannot read the file: {e}"))
    })?;
    check_text(path, bytes)
}

/// Checks that bytes are text a spec can be made of.
pub fn check_text(path: &Path, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        let pos = position_of_byte(&bytes, at);
        return Err(Diagnostic::error(
            path,
            Some(pos),
            Code::BinaryFile,
            "the file contains a NUL byte: it is binary, not YAML",
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let pos = position_of_byte(e.as_bytes(), at);
        Diagnostic::error(
            path,
            Some(pos),
            Code::NotUtf8,
            format!(
                "the file is not UTF-8 (invalid byte 0x{:02x})",
                e.as_bytes()[at]
            ),
        )
        .with_help("save the file as UTF-8")
    })
}

fn position_of_byte(bytes: &[u8], at: usize) -> Pos {
    let before = &bytes[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Pos::new(
        line.min(u32::MAX as usize) as u32,
        column.min(u32::MAX as usize) as u32,
    )
}

/// One loaded file: its text, node tree and typed model (when the model could be read).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub path: PathBuf,
    pub text: String,
    pub node: Node,
    pub spec: T,
}

fn de_diagnostic(path: &Path, error: DeError) -> Diagnostic {
    let mut diagnostic = Diagnostic::error(path, error.pos, error.code, error.message);
    diagnostic.help = error.help;
    diagnostic
}

/// Loads one spec file of type `T`. Returns the loaded file when its model could be read at
/// all, and every problem found on the way.
pub fn load_file<T: for<'n> serde::Deserialize<'n>>(
    path: &Path,
) -> (Option<Loaded<T>>, Vec<Diagnostic>) {
    let text = match read_source(path) {
        Ok(text) => text,
        Err(d) => return (None, vec![d]),
    };
    load_text(path, text)
}

/// Like [`load_file`], for text already in memory.
pub fn load_text<T: for<'n> serde::Deserialize<'n>>(
    path: &Path,
    text: String,
) -> (Option<Loaded<T>>, Vec<Diagnostic>) {
    let node = match parse_yaml(&text) {
        Ok(node) => node,
        Err(e) => {
            return (
                None,
                vec![Diagnostic::error(path, e.pos, e.code, e.message)],
            );
        }
    };
    let sink = ErrorSink::default();
    let result: Result<T, DeError> = node::from_node(&node, &sink);
    let mut diagnostics: Vec<Diagnostic> = sink
        .into_inner()
        .into_iter()
        .map(|e| de_diagnostic(path, e))
        .collect();
    match result {
        Ok(spec) => (
            Some(Loaded {
                path: path.to_path_buf(),
                text,
                node,
                spec,
            }),
            diagnostics,
        ),
        Err(e) => {
            diagnostics.push(de_diagnostic(path, e));
            diagnostics.sort_by_key(|d| (d.line, d.column));
            (None, diagnostics)
        }
    }
}

/// Everything under a flows directory: system files and flow files, with the problems found
/// while reading them.
#[derive(Debug, Default)]
pub struct Project {
    pub flows_dir: PathBuf,
    pub systems: IndexMap<String, Loaded<SystemFile>>,
    pub flows: Vec<Loaded<FlowFile>>,
    /// The text of every file read, for rendering diagnostics.
    pub sources: IndexMap<PathBuf, String>,
    pub diagnostics: Vec<Diagnostic>,
    /// Files that were read, whether or not they loaded.
    pub files: usize,
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

impl Project {
    /// Loads `flows_dir/systems/*.yaml` and `flows_dir/*.yaml`.
    pub fn load_dir(flows_dir: &Path) -> Project {
        let mut project = Project {
            flows_dir: flows_dir.to_path_buf(),
            ..Project::default()
        };
        if !flows_dir.is_dir() {
            project.diagnostics.push(
                Diagnostic::error(flows_dir, None, Code::Io, "no such directory")
                    .with_help("pass the flows directory with --flows DIR or TETHER_FLOWS"),
            );
            return project;
        }
        let systems_dir = flows_dir.join("systems");
        match yaml_files(&systems_dir) {
            Ok(files) => files.iter().for_each(|f| project.add_system_file(f)),
            Err(e) => project.diagnostics.push(Diagnostic::error(
                &systems_dir,
                None,
                Code::Io,
                format!("cannot list system files: {e}"),
            )),
        }
        match yaml_files(flows_dir) {
            Ok(files) => files.iter().for_each(|f| project.add_flow_file(f)),
            Err(e) => project.diagnostics.push(Diagnostic::error(
                flows_dir,
                None,
                Code::Io,
                format!("cannot list flow files: {e}"),
            )),
        }
        project
    }

    /// Loads what a user names on the command line: directories as flows directories, files
    /// as system or flow files. Files given alone are checked against the system files of
    /// `flows_dir`.
    pub fn load_paths(flows_dir: &Path, paths: &[PathBuf]) -> Project {
        if paths.is_empty() {
            return Project::load_dir(flows_dir);
        }
        let mut project = Project {
            flows_dir: flows_dir.to_path_buf(),
            ..Project::default()
        };
        for path in paths {
            if path.is_dir() {
                let dir = Project::load_dir(path);
                project.flows_dir = dir.flows_dir;
                project.systems.extend(dir.systems);
                project.flows.extend(dir.flows);
                project.sources.extend(dir.sources);
                project.diagnostics.extend(dir.diagnostics);
                project.files += dir.files;
            } else {
                project.add_file(path);
            }
        }
        if !paths.iter().any(|p| p.is_dir()) {
            let systems = Project::load_dir(flows_dir);
            for (name, system) in systems.systems {
                project.systems.entry(name).or_insert(system);
            }
            project.sources.extend(systems.sources);
        }
        project
    }

    /// Loads a file given by a user, as a system file when its top-level keys say so
    /// (`system:`) and as a flow file otherwise.
    pub fn add_file(&mut self, path: &Path) {
        let is_system = path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "systems")
            || read_source(path)
                .ok()
                .and_then(|text| parse_yaml(&text).ok())
                .is_some_and(|node| node.get("system").is_some() && node.get("flow").is_none());
        if is_system {
            self.add_system_file(path)
        } else {
            self.add_flow_file(path)
        }
    }

    /// Loads one system file into the project.
    pub fn add_system_file(&mut self, path: &Path) {
        self.files += 1;
        let (loaded, diagnostics) = load_file::<SystemFile>(path);
        self.diagnostics.extend(diagnostics);
        if let Some(loaded) = loaded {
            self.sources.insert(path.to_path_buf(), loaded.text.clone());
            let name = loaded.spec.system.value.clone();
            self.systems.insert(name, loaded);
        } else if let Ok(text) = read_source(path) {
            self.sources.insert(path.to_path_buf(), text);
        }
    }

    /// Loads one flow file into the project.
    pub fn add_flow_file(&mut self, path: &Path) {
        self.files += 1;
        let (loaded, diagnostics) = load_file::<FlowFile>(path);
        self.diagnostics.extend(diagnostics);
        if let Some(loaded) = loaded {
            self.sources.insert(path.to_path_buf(), loaded.text.clone());
            self.flows.push(loaded);
        } else if let Ok(text) = read_source(path) {
            self.sources.insert(path.to_path_buf(), text);
        }
    }

    /// The valid mappings of all flows, with their flow.
    pub fn mappings(
        &self,
    ) -> impl Iterator<Item = (&Loaded<FlowFile>, &crate::spec::flow::MappingSpec)> {
        self.flows.iter().flat_map(|flow| {
            flow.spec
                .mappings
                .iter()
                .filter_map(move |m| m.valid().map(|m| (flow, m)))
        })
    }
}
