//! Self-contained HTML pages: one per flow and an index, with inline CSS and SVG diagrams of
//! which entities flow where and in which direction. No scripts, no network, no assets.

use std::fmt::Write as _;

use crate::docs::{FlowView, details, rows, section_title};
use crate::spec::flow::Direction;

/// Text made safe for HTML content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2330;line-height:1.45}\
h1{font-size:1.8rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d5d9e2;padding-bottom:.2rem}\
.generated{color:#667085;margin-top:0}table{border-collapse:collapse;width:100%;margin:.8rem 0}\
th,td{border:1px solid #d5d9e2;padding:.35rem .6rem;text-align:left;vertical-align:top}th{background:#f2f4f8}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;background:#f5f6f9;padding:0 .2rem;border-radius:3px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}\
.note{color:#8a4b00}svg{max-width:100%;height:auto;display:block;margin:1rem 0}\
a{color:#2456c7}";

fn page(title: &str, generated: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"generated\">Generated: {}</p>\n{body}</body>\n</html>\n",
        esc(title),
        esc(title),
        esc(generated)
    )
}

const ARROW_DEFS: &str = "<defs><marker id=\"end\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#2456c7\"/></marker>\
<marker id=\"start\" viewBox=\"0 0 10 10\" refX=\"1\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M10,0L0,5L10,10z\" fill=\"#2456c7\"/></marker></defs>";

fn markers(direction: Direction) -> &'static str {
    match direction {
        Direction::Both => " marker-start=\"url(#start)\" marker-end=\"url(#end)\"",
        Direction::SourceToTarget => " marker-end=\"url(#end)\"",
        Direction::TargetToSource => " marker-start=\"url(#start)\"",
    }
}

/// The diagram of one flow: the source system's entities on the left, the target's on the
/// right, an arrow per mapping pointing the way changes flow.
fn flow_diagram(flow: &FlowView<'_>) -> String {
    let mappings: Vec<_> = flow.mappings().collect();
    let row_height = 56;
    let height = 90 + row_height * mappings.len().max(1) as i32;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 760 {height}\" role=\"img\" aria-label=\"{}\">{ARROW_DEFS}",
        esc(&format!("Diagram of the {} flow", flow.spec.title.value))
    );
    for (x, title) in [(20, &flow.source_title), (520, &flow.target_title)] {
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"10\" width=\"220\" height=\"{}\" rx=\"10\" fill=\"#f2f4f8\" stroke=\"#98a2b3\"/>\
             <text x=\"{}\" y=\"38\" text-anchor=\"middle\" font-size=\"18\" font-weight=\"600\" fill=\"#1d2330\">{}</text>",
            height - 20,
            x + 110,
            esc(title)
        );
    }
    for (i, mapping) in mappings.iter().enumerate() {
        let y = 60 + row_height * i as i32;
        for (x, label) in [(35, &mapping.source.value), (535, &mapping.target.value)] {
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"190\" height=\"36\" rx=\"6\" fill=\"#fff\" stroke=\"#2456c7\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#1d2330\">{}</text>",
                x + 95,
                y + 23,
                esc(label)
            );
        }
        let _ = write!(
            svg,
            "<line x1=\"232\" y1=\"{0}\" x2=\"528\" y2=\"{0}\" stroke=\"#2456c7\" stroke-width=\"2\"{1}/>\
             <text x=\"380\" y=\"{2}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#475467\">{3}</text>",
            y + 18,
            markers(mapping.direction),
            y + 12,
            esc(&mapping.identity.value)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The page of one flow.
pub fn flow_page(flow: &FlowView<'_>, generated: &str) -> String {
    let mut body = String::new();
    let (from, to) = flow.intro_systems();
    let _ = writeln!(body, "<p><a href=\"index.html\">All dataflows</a></p>");
    let _ = writeln!(
        body,
        "<h2>Introduction</h2>\n<p>This document describes the data flow from {} to {}: which records are kept in sync, how they are linked, and which properties are synchronized.</p>",
        esc(&from),
        esc(&to)
    );
    if let Some(description) = &flow.spec.description {
        let _ = writeln!(body, "<p>{}</p>", esc(description));
    }
    body.push_str(&flow_diagram(flow));
    for mapping in flow.mappings() {
        let (source, target) = (&mapping.source_label, &mapping.target_label);
        let _ = writeln!(
            body,
            "<h2 id=\"{}\">{}</h2>",
            esc(&mapping.name.value),
            esc(&section_title(mapping))
        );
        let _ = writeln!(
            body,
            "<p>Every {} will be synchronized with a {}.</p>",
            esc(source),
            esc(target)
        );
        let _ = writeln!(
            body,
            "<p>Once a link between a {} and a {} is established, it will keep in sync between the two systems, regardless of where it is edited.</p>",
            esc(source),
            esc(target)
        );
        if let Some(description) = &mapping.description {
            let _ = writeln!(body, "<p>{}</p>", esc(description));
        }
        body.push_str("<dl>");
        for (label, text) in details(mapping) {
            let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", esc(label), esc(&text));
        }
        body.push_str("</dl>\n");
        let _ = writeln!(
            body,
            "<p>The following properties are synchronized between a {} and a {}:</p>",
            esc(source),
            esc(target)
        );
        let _ = writeln!(
            body,
            "<table><thead><tr><th>{} Property</th><th>{} Property</th><th>{} Data Type</th></tr></thead><tbody>",
            esc(source),
            esc(target),
            esc(flow.type_label())
        );
        for row in rows(mapping) {
            let note = row
                .note
                .as_ref()
                .map(|n| format!(" <span class=\"note\">({})</span>", esc(n)))
                .unwrap_or_default();
            let _ = writeln!(
                body,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}{note}</td></tr>",
                esc(&row.source),
                esc(&row.target),
                esc(&row.data_type)
            );
        }
        body.push_str("</tbody></table>\n");
    }
    page(&flow.document_title(), generated, &body)
}

/// The index: every flow, and a diagram of all systems with an edge per flow.
pub fn index_page(flows: &[FlowView<'_>], generated: &str) -> String {
    let mut systems: Vec<String> = Vec::new();
    for flow in flows {
        for title in [&flow.source_title, &flow.target_title] {
            if !systems.contains(title) {
                systems.push(title.clone());
            }
        }
    }
    let (cx, cy, radius) = (380.0f64, 260.0f64, 215.0f64);
    let position = |i: usize| {
        let angle = std::f64::consts::TAU * i as f64 / systems.len().max(1) as f64
            - std::f64::consts::FRAC_PI_2;
        (cx + radius * angle.cos(), cy + radius * angle.sin())
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 760 520\" role=\"img\" aria-label=\"Systems and the flows between them\">{ARROW_DEFS}"
    );
    for flow in flows {
        let from = systems
            .iter()
            .position(|s| *s == flow.source_title)
            .unwrap_or(0);
        let to = systems
            .iter()
            .position(|s| *s == flow.target_title)
            .unwrap_or(0);
        let ((x1, y1), (x2, y2)) = (position(from), position(to));
        let (dx, dy) = (x2 - x1, y2 - y1);
        let length = (dx * dx + dy * dy).sqrt().max(1.0);
        let shrink = 62.0 / length;
        let both = flow.mappings().any(|m| m.direction == Direction::Both);
        let marker = if both {
            markers(Direction::Both)
        } else {
            markers(Direction::SourceToTarget)
        };
        let _ = write!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#2456c7\" stroke-width=\"2\"{marker}/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#475467\" stroke=\"#fff\" stroke-width=\"4\" paint-order=\"stroke\">{} mappings</text>",
            x1 + dx * shrink,
            y1 + dy * shrink,
            x2 - dx * shrink,
            y2 - dy * shrink,
            // The label sits beside the middle of the line, on its left, so crossing lines
            // do not put their labels on top of each other.
            x1 + dx * 0.5 - dy / length * 14.0,
            y1 + dy * 0.5 + dx / length * 14.0,
            flow.mappings().count()
        );
    }
    for (i, system) in systems.iter().enumerate() {
        let (x, y) = position(i);
        let width = (system.chars().count() as f64 * 10.0 + 24.0).max(120.0);
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{width:.0}\" height=\"40\" rx=\"8\" fill=\"#f2f4f8\" stroke=\"#98a2b3\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"600\" fill=\"#1d2330\">{}</text>",
            x - width / 2.0,
            y - 20.0,
            y + 5.0,
            esc(system)
        );
    }
    svg.push_str("</svg>\n");
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<p>Every flow Tether runs, generated from its flow file.</p>"
    );
    body.push_str(&svg);
    body.push_str("<table><thead><tr><th>Flow</th><th>From</th><th>To</th><th>Mappings</th></tr></thead><tbody>\n");
    for flow in flows {
        let _ = writeln!(
            body,
            "<tr><td><a href=\"{}.html\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(flow.name()),
            esc(&flow.document_title()),
            esc(&flow.source_title),
            esc(&flow.target_title),
            flow.mappings()
                .map(|m| esc(&section_title(m)))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    body.push_str("</tbody></table>\n");
    page("Tether dataflows", generated, &body)
}
