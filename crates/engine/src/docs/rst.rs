//! reStructuredText in the shape of the original dataflow documents.

use std::fmt::Write as _;

use crate::docs::{FlowView, details, rows, section_title};

/// The fixed introduction of every dataflow document, with the two systems filled in.
fn introduction(from: &str, to: &str) -> String {
    format!(
        "This technical document provides a detailed overview of the Sesam Talk data flow from {from} to {to}. \
         It serves as a QA checklist for testing purposes and is the intellectual property of Sesam.io AS. \
         The content contains confidential information regulated under an NDA agreement, and sharing or \
         distributing it without written permission is prohibited."
    )
}

fn underline(out: &mut String, text: &str, mark: char) {
    let _ = writeln!(out, "{text}");
    let _ = writeln!(out, "{}", mark.to_string().repeat(text.chars().count()));
}

/// Escapes text for a table cell or paragraph: inline markup characters lose their meaning.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '`' | '|' | '_' | '\\') {
            out.push('\\');
        }
        if c == '\n' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Inline literal text (paths, templates) in a table cell.
fn literal(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let flat = text.replace('\n', " ");
    if flat.contains('`') {
        escape(&flat)
    } else {
        format!("``{flat}``")
    }
}

/// The RST document of one flow.
pub fn flow_document(flow: &FlowView<'_>, generated: &str) -> String {
    let mut out = String::new();
    let title = flow.document_title();
    let bar = "=".repeat(title.chars().count());
    let _ = writeln!(out, "{bar}\n{title}\n{bar}\n");
    let _ = writeln!(out, "Generated: {generated}\n");
    underline(&mut out, "Introduction", '-');
    let (from, to) = flow.intro_systems();
    let _ = writeln!(out, "\n{}\n", introduction(&from, &to));
    if let Some(description) = &flow.spec.description {
        let _ = writeln!(out, "{}\n", escape(description.trim()));
    }
    for mapping in flow.mappings() {
        let (source, target) = (&mapping.source_label, &mapping.target_label);
        underline(&mut out, &section_title(mapping), '-');
        let _ = writeln!(
            out,
            "Every {source} will be synchronized with a {target}.\n"
        );
        let _ = writeln!(
            out,
            "Once a link between a {source} and a {target} is established, it will keep in sync between the two systems, regardless of where it is edited.\n"
        );
        if let Some(description) = &mapping.description {
            let _ = writeln!(out, "{}\n", escape(description.trim()));
        }
        for (label, text) in details(mapping) {
            let _ = writeln!(out, ":{label}: {}", escape(&text));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "The following properties are synchronized between a {source} and a {target}:\n"
        );
        let _ = writeln!(out, ".. list-table::\n   :header-rows: 1\n");
        let _ = writeln!(
            out,
            "   * - {source} Property\n     - {target} Property\n     - {} Data Type",
            flow.type_label()
        );
        for row in rows(mapping) {
            let data_type = match &row.note {
                Some(note) => format!("{} ({})", row.data_type, escape(note)),
                None => row.data_type.clone(),
            };
            let _ = writeln!(
                out,
                "   * - {}\n     - {}\n     - {}",
                literal(&row.source),
                literal(&row.target),
                data_type
            );
        }
        let _ = writeln!(out, "\n");
    }
    out
}
