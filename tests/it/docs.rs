//! The dataflow documents generated from the shipped flows: valid shape, faithful to the
//! original documents (vendored in `docs/seeds/`) (same title, sections, sentences; tables now
//! filled), and the committed copies under `docs/dataflows/` are current.

use std::path::{Path, PathBuf};

use tether_engine::docs::{DocFormat, Document, generate};
use tether_engine::spec::load::Project;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generated(format: DocFormat) -> Vec<Document> {
    let project = Project::load_dir(&root().join("flows"));
    assert!(
        project.diagnostics.is_empty(),
        "the shipped flows load: {:#?}",
        project.diagnostics
    );
    generate(&project, format, "2000-01-01 00:00:00")
}

fn without_timestamp(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Generated: ") && !l.starts_with("<p class=\"generated\">"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paragraph sentences and section titles of an RST document, in order, without tables.
fn outline(text: &str) -> (String, Vec<String>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let title = lines
        .get(1)
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    let mut sections = Vec::new();
    let mut sentences = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).copied().unwrap_or_default();
        if !line.is_empty()
            && !next.is_empty()
            && next.chars().all(|c| c == '-')
            && next.len() == line.chars().count()
        {
            sections.push((*line).to_owned());
        } else if line.ends_with('.')
            || line.ends_with(':') && !line.starts_with(' ') && !line.starts_with(".. ")
        {
            sentences.push((*line).to_owned());
        }
    }
    (title, sections, sentences)
}

#[test]
fn each_document_matches_its_seed_with_the_tables_filled() {
    let seeds_dir = root().join("docs/seeds");
    let entries =
        std::fs::read_dir(&seeds_dir).expect("the seed documents are vendored in docs/seeds");
    let documents = generated(DocFormat::Rst);
    let mut seeds: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
    seeds.sort();
    assert_eq!(seeds.len(), 5, "five seed documents");
    for seed_path in seeds {
        let seed = std::fs::read_to_string(&seed_path).expect("seed readable");
        let (seed_title, seed_sections, seed_sentences) = outline(&seed);
        let document = documents
            .iter()
            .find(|d| outline(&d.text).0 == seed_title)
            .unwrap_or_else(|| panic!("no generated document titled {seed_title:?}"));
        let (_, sections, sentences) = outline(&document.text);
        assert_eq!(
            sections, seed_sections,
            "{}: the same sections in the same order",
            document.file_name
        );
        let mut position = 0;
        for sentence in &seed_sentences {
            let found = sentences[position..].iter().position(|s| s == sentence);
            let Some(offset) = found else {
                panic!(
                    "{}: the seed's sentence is missing or out of order: {sentence:?}",
                    document.file_name
                );
            };
            position += offset + 1;
        }
        // Every section's table has rows beyond its header now.
        for section in document.text.split(".. list-table::").skip(1) {
            let rows = section.lines().filter(|l| l.starts_with("   * - ")).count();
            assert!(
                rows > 1,
                "{}: a property table is empty",
                document.file_name
            );
        }
        let header_rows: Vec<&str> = seed
            .lines()
            .filter(|l| l.contains(" Property") || l.contains(" Data Type"))
            .collect();
        for header in header_rows {
            assert!(
                document.text.contains(header),
                "{}: table header {header:?}",
                document.file_name
            );
        }
    }
}

#[test]
fn the_committed_documents_are_current() {
    for format in [DocFormat::Rst, DocFormat::Html] {
        for document in generated(format) {
            let path = root().join("docs/dataflows").join(&document.file_name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                without_timestamp(&committed) == without_timestamp(&document.text),
                "{} is stale: run `cargo run -- docs && cargo run -- docs --format html`",
                path.display()
            );
        }
    }
}

#[test]
fn the_html_pages_are_self_contained_with_a_diagram() {
    let pages = generated(DocFormat::Html);
    assert_eq!(pages.len(), 6, "five flows and an index");
    for page in &pages {
        assert!(
            page.text.contains("<svg"),
            "{} has a diagram",
            page.file_name
        );
        for forbidden in ["<script", "src=\"http", "href=\"http", "<link", "@import"] {
            assert!(
                !page.text.contains(forbidden),
                "{} loads nothing from outside ({forbidden})",
                page.file_name
            );
        }
    }
    let keap = pages
        .iter()
        .find(|p| p.file_name == "keap-to-customerp.html")
        .expect("keap page");
    assert!(keap.text.contains("Keap Companies to Customerp Customer"));
    assert!(
        keap.text.contains("marker-end"),
        "arrows show the direction"
    );
}
