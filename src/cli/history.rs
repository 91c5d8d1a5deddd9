//! `tether history SYSTEM ENTITY ID`: a record's story across its counterparts, from the
//! change log. A thin layer over `tether_engine::ops::history`.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use tether_engine::ops::RecordRef;
use tether_engine::ops::history::{self, Story};
use tether_engine::store::Store;

use crate::cli::run::{StateArg, runtime};
use crate::{Format, exit};

/// Options of `tether history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The system (`keap`).
    pub system: String,
    /// The entity (`companies`).
    pub entity: String,
    /// The record's id in that system.
    pub id: String,
    /// Only the writes of this field (by the mapping's target path, `email`).
    #[arg(long)]
    pub field: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: HistoryArgs) -> anyhow::Result<u8> {
    let record = RecordRef {
        system: args.system,
        entity: args.entity,
        id: args.id,
    };
    let state = args.state.url;
    runtime()?.block_on(async move {
        let store = Store::open(&state)
            .await
            .with_context(|| format!("cannot open the state store {state}"))?;
        let story = history::of_record(&store, &record, args.field.as_deref()).await?;
        let text = match args.format {
            Format::Json => format!("{}\n", serde_json::to_string_pretty(&story)?),
            Format::Text => story_text(&story),
        };
        crate::cli::emit(&text)?;
        Ok(exit::OK)
    })
}

fn value_text(value: Option<&Value>) -> String {
    match value {
        None => "(none)".to_owned(),
        Some(value) => {
            let text = value.to_string();
            if text.chars().count() > 80 {
                format!("{}…", text.chars().take(80).collect::<String>())
            } else {
                text
            }
        }
    }
}

fn story_text(story: &Story) -> String {
    let mut out = String::new();
    let r = &story.record;
    let _ = writeln!(out, "{} {} {}", r.system, r.entity, r.id);
    for link in &story.links {
        let _ = writeln!(out, "  {} {}", link.identity, link.global_id);
    }
    for counterpart in &story.counterparts {
        let _ = writeln!(
            out,
            "  same as {} {} {}",
            counterpart.system, counterpart.entity, counterpart.id
        );
    }
    if story.entries.is_empty() {
        let _ = writeln!(
            out,
            "\nno write in the change log (it keeps the last days set by --history-days)"
        );
    }
    for entry in &story.entries {
        let _ = writeln!(
            out,
            "\n{}  {} {} {} {}  ({}{})",
            entry.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            entry.action.as_str(),
            entry.record.system,
            entry.record.entity,
            entry.record.id,
            entry.mapping,
            entry
                .run_id
                .as_ref()
                .map(|id| format!(", run {id}"))
                .unwrap_or_default()
        );
        // One reason for the whole write is said once.
        let shared = entry
            .changes
            .first()
            .filter(|first| entry.changes.iter().all(|c| c.why == first.why))
            .map(|first| first.why.as_str());
        if let Some(why) = shared {
            let _ = writeln!(out, "  {why}");
        }
        for change in entry.changes.iter().filter(|c| !c.field.is_empty()) {
            let _ = write!(
                out,
                "  {}: {} -> {}",
                change.field,
                value_text(change.old.as_ref()),
                value_text(change.new.as_ref()),
            );
            let _ = match shared {
                Some(_) => writeln!(out),
                None => writeln!(out, "  ({})", change.why),
            };
        }
    }
    out
}
