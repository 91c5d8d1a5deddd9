//! Dataflow documents generated from flow files (`tether docs`).
//!
//! The documents that QA and customers read are generated from the flow files that run, so
//! they cannot drift: reStructuredText in the shape of the original dataflow documents (title,
//! `Generated:` line, introduction, one section per mapping with its property table), and a
//! self-contained HTML page per flow with an inline SVG diagram. This module reads the spec
//! model only; it knows nothing of YAML, connectors or the engine.

mod html;
mod rst;

use crate::spec::check::all_rules;
use crate::spec::flow::{
    ConflictPolicy, DeletePolicy, Direction, FlowFile, MappingSpec, RuleSpec, Side,
};
use crate::spec::load::Project;

pub use html::{esc, flow_page, index_page};
pub use rst::flow_document;

/// One generated file: a name relative to the output folder, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub file_name: String,
    pub text: String,
}

/// Output formats of `tether docs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Rst,
    Html,
}

/// Generates the documents of every flow of a project. `generated` is the timestamp written
/// on the `Generated:` line (`YYYY-MM-DD HH:MM:SS`).
pub fn generate(project: &Project, format: DocFormat, generated: &str) -> Vec<Document> {
    let flows: Vec<FlowView<'_>> = project
        .flows
        .iter()
        .map(|f| FlowView::new(project, &f.spec))
        .collect();
    match format {
        DocFormat::Rst => flows
            .iter()
            .map(|flow| Document {
                file_name: format!("{}.rst", flow.name()),
                text: flow_document(flow, generated),
            })
            .collect(),
        DocFormat::Html => {
            let mut documents: Vec<Document> = flows
                .iter()
                .map(|flow| Document {
                    file_name: format!("{}.html", flow.name()),
                    text: flow_page(flow, generated),
                })
                .collect();
            documents.push(Document {
                file_name: "index.html".into(),
                text: index_page(&flows, generated),
            });
            documents
        }
    }
}

/// A flow with the names documents use for it, resolved against its system files.
#[derive(Debug, Clone)]
pub struct FlowView<'a> {
    pub spec: &'a FlowFile,
    /// Source system title ("Keap"), from its system file or the system name.
    pub source_title: String,
    /// Target system title.
    pub target_title: String,
}

impl<'a> FlowView<'a> {
    pub fn new(project: &Project, spec: &'a FlowFile) -> Self {
        let title = |system: &str| {
            project
                .systems
                .get(system)
                .map_or_else(|| system.to_owned(), |s| s.spec.title.clone())
        };
        FlowView {
            spec,
            source_title: title(&spec.source.value),
            target_title: title(&spec.target.value),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.flow.value
    }

    /// "Keap to Customerp Dataflow".
    pub fn document_title(&self) -> String {
        format!("{} Dataflow", self.spec.title.value)
    }

    /// The two systems as the introduction names them: the parts of the title around " to ".
    pub fn intro_systems(&self) -> (String, String) {
        match self.spec.title.value.split_once(" to ") {
            Some((from, to)) => (from.to_owned(), to.to_owned()),
            None => (self.source_title.clone(), self.target_title.clone()),
        }
    }

    /// What the data type column calls the target system ("Customerp", "Custom").
    pub fn type_label(&self) -> &str {
        self.spec
            .target_label
            .as_deref()
            .unwrap_or(&self.target_title)
    }

    pub fn mappings(&self) -> impl Iterator<Item = &'a MappingSpec> {
        self.spec.mappings.iter().filter_map(|m| m.valid())
    }
}

/// A section title: "Keap Companies to Customerp Customer".
pub fn section_title(mapping: &MappingSpec) -> String {
    format!("{} to {}", mapping.source_label, mapping.target_label)
}

/// One row of a property table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub source: String,
    pub target: String,
    pub data_type: String,
    /// Set for rules that work one way only in a two-way mapping, or that say why they are as they are.
    pub note: Option<String>,
}

/// The property table of a mapping, sub-rules of arrays as `lines[].sku` rows.
pub fn rows(mapping: &MappingSpec) -> Vec<Row> {
    let mut out = Vec::new();
    for rule in mapping.properties.iter().filter_map(|r| r.valid()) {
        push_rows(mapping, rule, "", "", &mut out);
    }
    out
}

fn push_rows(
    mapping: &MappingSpec,
    rule: &RuleSpec,
    source_prefix: &str,
    target_prefix: &str,
    out: &mut Vec<Row>,
) {
    let source = match (&rule.source, &rule.template) {
        (Some(source), _) => format!("{source_prefix}{}", source.value.trim_start_matches("$.")),
        (None, Some(template)) => template.value.trim().to_owned(),
        (None, None) => "(default)".to_owned(),
    };
    let target = format!("{target_prefix}{}", rule.target.value);
    let mut data_type = rule.data_type.value.name().to_owned();
    if let Some(reference) = &rule.reference {
        data_type = format!("reference to {}", reference.value);
    }
    let direction = rule
        .direction
        .as_ref()
        .map_or(mapping.direction, |d| d.value);
    let one_way = mapping.direction == Direction::Both && direction != Direction::Both;
    let note = match (one_way, &rule.note) {
        (true, Some(note)) => Some(format!("{}: {note}", direction_words(direction))),
        (true, None) => Some(direction_words(direction).to_owned()),
        (false, note) => note.clone(),
    };
    out.push(Row {
        source,
        target: target.clone(),
        data_type,
        note,
    });
    if let Some(items) = &rule.items {
        let source_prefix = format!(
            "{}[].",
            rule.source
                .as_ref()
                .map_or("", |s| s.value.trim_start_matches("$."))
        );
        let target_prefix = format!("{target}[].");
        for item in items.iter().filter_map(|r| r.valid()) {
            push_rows(mapping, item, &source_prefix, &target_prefix, out);
        }
    }
}

/// Words for a direction, as sentences use them.
pub fn direction_words(direction: Direction) -> &'static str {
    match direction {
        Direction::Both => "both ways",
        Direction::SourceToTarget => "one way, source to target",
        Direction::TargetToSource => "one way, target to source",
    }
}

/// The sync details of a mapping beyond the seeds' sentences, as (label, text) pairs.
pub fn details(mapping: &MappingSpec) -> Vec<(&'static str, String)> {
    let conflict = match mapping.conflict {
        ConflictPolicy::NewestWins => format!(
            "newest wins (ties and records without a modification time: the {} wins)",
            match mapping.tie_breaker {
                Side::Source => "source",
                Side::Target => "target",
            }
        ),
        ConflictPolicy::SourceWins => "the source wins".to_owned(),
        ConflictPolicy::TargetWins => "the target wins".to_owned(),
        ConflictPolicy::Manual => "held for a person to decide (`tether conflicts`)".to_owned(),
    };
    let deletes = match mapping.deletes {
        DeletePolicy::Propagate => "a delete on one side deletes the counterpart",
        DeletePolicy::Unlink => "a delete on one side unlinks the pair and keeps the counterpart",
        DeletePolicy::Ignore => "deletes are ignored",
    };
    let match_keys = if mapping.match_keys.is_empty() {
        "none: records are linked only when created by Tether".to_owned()
    } else {
        mapping
            .match_keys
            .iter()
            .map(|k| {
                format!(
                    "{} = {}",
                    k.value.source.value.trim_start_matches("$."),
                    k.value.target.value
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = vec![
        ("Direction", direction_words(mapping.direction).to_owned()),
        ("Identity type", mapping.identity.value.clone()),
        ("Match keys", match_keys),
        ("Conflicts", conflict),
        ("Deletes", deletes.to_owned()),
    ];
    if let Some(filter) = &mapping.filter {
        out.push(("Only records where", filter.value.clone()));
    }
    let one_way = all_rules(&mapping.properties)
        .iter()
        .filter(|r| {
            mapping.direction == Direction::Both
                && r.direction
                    .as_ref()
                    .is_some_and(|d| d.value != Direction::Both)
        })
        .count();
    if one_way > 0 {
        out.push(("One-way rules", format!("{one_way}, marked in the table")));
    }
    out
}
