//! `tether map`: applies one mapping to records read from stdin and writes the mapped
//! records to stdout as JSON Lines, in input order. Failed records go to stderr with their
//! position and reason; the others go on.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tether_engine::mapping::{self, CompiledMapping, KeepIds};
use tether_engine::spec::load::Project;

use crate::exit;

pub fn run(flows: &Path, name: &str, inverse: bool) -> anyhow::Result<u8> {
    let project = Project::load_dir(flows);
    let plan = match find_mapping(&project, name)? {
        Ok((plan, warnings)) => {
            for warning in &warnings {
                let source = project.sources.get(&warning.path).map(String::as_str);
                eprint!("{}", warning.render(source));
            }
            plan
        }
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                let source = project.sources.get(&diagnostic.path).map(String::as_str);
                eprint!("{}", diagnostic.render(source));
            }
            eprintln!("the mapping `{name}` has errors; nothing was mapped");
            return Ok(exit::FAILED);
        }
    };
    let references = plan.references();
    if !references.is_empty() {
        let rules: Vec<String> = references
            .iter()
            .map(|r| format!("`{}` (through `{}`)", r.target, r.mapping))
            .collect();
        eprintln!(
            "note: reference rules {} keep their ids unchanged: `map` has no links to translate them",
            rules.join(", ")
        );
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut counts = Counts::default();
    let first = first_byte(&mut input).context("cannot read stdin")?;
    if first == Some(b'[') {
        let mut text = String::new();
        input
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        let records: Vec<Value> =
            serde_json::from_str(&text).context("stdin is not a valid JSON array")?;
        for (index, record) in records.iter().enumerate() {
            map_one(
                &plan,
                record,
                inverse,
                Position::Item(index + 1),
                &mut out,
                &mut counts,
            )?;
        }
    } else {
        let mut line = String::new();
        let mut number = 0usize;
        loop {
            line.clear();
            let read = input.read_line(&mut line).context("cannot read stdin")?;
            if read == 0 {
                break;
            }
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let position = Position::Line(number);
            match serde_json::from_str::<Value>(&line) {
                Ok(record) => map_one(&plan, &record, inverse, position, &mut out, &mut counts)?,
                Err(error) => {
                    counts.failed += 1;
                    eprintln!("{position}: invalid JSON: {error}");
                }
            }
        }
    }
    out.flush().context("cannot write stdout")?;
    if counts.filtered > 0 {
        eprintln!(
            "{} record(s) left out by the mapping's filter",
            counts.filtered
        );
    }
    if counts.failed > 0 {
        eprintln!("{} record(s) failed", counts.failed);
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}

/// Where a record was in the input.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// The n-th line of JSON Lines input.
    Line(usize),
    /// The n-th item of a JSON array.
    Item(usize),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Line(n) => write!(f, "record {n} (line {n})"),
            Position::Item(n) => write!(f, "record {n}"),
        }
    }
}

#[derive(Default)]
struct Counts {
    failed: usize,
    filtered: usize,
}

fn map_one(
    plan: &CompiledMapping,
    record: &Value,
    inverse: bool,
    position: Position,
    out: &mut impl Write,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    if !inverse {
        match mapping::accepts(plan, record) {
            Ok(true) => {}
            Ok(false) => {
                counts.filtered += 1;
                return Ok(());
            }
            Err(error) => {
                counts.failed += 1;
                eprintln!("{position}: {error}");
                return Ok(());
            }
        }
    }
    let result = if inverse {
        mapping::apply_inverse(plan, record, &KeepIds)
    } else {
        mapping::apply_forward(plan, record, &KeepIds)
    };
    match result {
        Ok(mapped) => {
            serde_json::to_writer(&mut *out, &mapped).context("cannot write stdout")?;
            out.write_all(b"\n").context("cannot write stdout")?;
        }
        Err(error) => {
            counts.failed += 1;
            for rule_error in &error.errors {
                eprintln!("{position}: {rule_error}");
            }
        }
    }
    Ok(())
}

/// The first byte of the input that is not whitespace, left unread.
fn first_byte(input: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(None);
        }
        match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(at) => {
                let byte = buffer[at];
                input.consume(at);
                return Ok(Some(byte));
            }
            None => {
                let len = buffer.len();
                input.consume(len);
            }
        }
    }
}

/// Diagnostics of one mapping.
type Diagnostics = Vec<tether_engine::spec::diagnostic::Diagnostic>;

/// Finds and compiles the mapping named `NAME` or `FLOW/NAME`, with its warnings. The outer
/// error is a usage problem; the inner one the mapping's diagnostics.
fn find_mapping(
    project: &Project,
    name: &str,
) -> anyhow::Result<Result<(CompiledMapping, Diagnostics), Diagnostics>> {
    let (flow_name, mapping_name) = match name.split_once('/') {
        Some((flow, mapping)) => (Some(flow), mapping),
        None => (None, name),
    };
    let found: Vec<_> = project
        .mappings()
        .filter(|(flow, mapping)| {
            mapping.name.value == mapping_name
                && flow_name.is_none_or(|f| flow.spec.flow.value == f)
        })
        .collect();
    let (flow, spec) = match found.as_slice() {
        [one] => *one,
        [] => {
            let names: Vec<&str> = project
                .mappings()
                .map(|(_, m)| m.name.value.as_str())
                .collect();
            let hint = tether_engine::spec::node::did_you_mean(mapping_name, names.iter().copied())
                .map(|best| format!(" (did you mean `{best}`?)"))
                .unwrap_or_default();
            for diagnostic in project.diagnostics.iter().filter(|d| d.is_error()) {
                let source = project.sources.get(&diagnostic.path).map(String::as_str);
                eprint!("{}", diagnostic.render(source));
            }
            bail!(
                "no mapping `{name}` in {}{hint}",
                project.flows_dir.display()
            );
        }
        several => {
            let flows: Vec<String> = several
                .iter()
                .map(|(flow, _)| format!("`{}/{mapping_name}`", flow.spec.flow.value))
                .collect();
            bail!(
                "the mapping name `{mapping_name}` is used in several flows: name one of {}",
                flows.join(", ")
            );
        }
    };
    let Some((source, target)) = mapping::compile::entities(project, &flow.spec, spec) else {
        bail!("the systems or entities of `{name}` are missing: run `tether validate`");
    };
    Ok(mapping::compile(
        &flow.path,
        &flow.spec.flow,
        &flow.spec.source,
        &flow.spec.target,
        spec,
        source,
        target,
    ))
}
