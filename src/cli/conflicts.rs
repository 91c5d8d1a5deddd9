//! `tether conflicts`: conflicts held for a person, waiting to be written and decided by a
//! policy; `tether conflicts resolve` records a choice. A thin layer over
//! `tether_engine::ops::conflicts`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tether_engine::ops::Names;
use tether_engine::ops::conflicts::{self, ConflictItem, Listing};
use tether_engine::spec::load::Project;
use tether_engine::store::{Choice, Store};

use crate::cli::run::{StateArg, runtime};
use crate::{Format, exit};

/// Options of `tether conflicts`.
#[derive(Debug, Args)]
pub struct ConflictsArgs {
    #[command(subcommand)]
    pub action: Option<ConflictsAction>,
    #[command(flatten)]
    pub state: StateArg,
    /// Only this mapping's conflicts.
    #[arg(long, value_name = "NAME")]
    pub mapping: Option<String>,
    /// How many of the latest conflicts decided by a policy to show as well.
    #[arg(long, default_value_t = 20)]
    pub recent: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum ConflictsAction {
    /// Decide a held conflict; the next run of its mapping writes the choice to both sides.
    Resolve {
        /// The conflict's id, as `tether conflicts` shows it.
        id: String,
        /// `source`, `target`, or `value V` (JSON when it parses as JSON, text otherwise).
        #[arg(long, num_args = 1..=2, value_names = ["CHOICE", "VALUE"], required = true)]
        take: Vec<String>,
        #[command(flatten)]
        state: StateArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn run(flows: &Path, args: ConflictsArgs) -> anyhow::Result<u8> {
    match args.action {
        None => list(flows, args),
        Some(ConflictsAction::Resolve {
            id,
            take,
            state,
            format,
        }) => {
            let choice = conflicts::parse_choice(&take)?;
            let url = state.url;
            runtime()?.block_on(async move {
                let store = Store::open(&url)
                    .await
                    .with_context(|| format!("cannot open the state store {url}"))?;
                let conflict = conflicts::resolve(&store, &id, choice).await?;
                if format == Format::Json {
                    crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&conflict)?))?;
                } else {
                    let what = match &conflict.choice {
                        Some(Choice::Source) => "the source's value".to_owned(),
                        Some(Choice::Target) => "the target's value".to_owned(),
                        Some(Choice::Value(value)) => value.to_string(),
                        None => "nothing".to_owned(),
                    };
                    crate::cli::emit(&format!(
                        "conflict {} on `{}` resolved: it takes {what}; the next run of {} writes it\n",
                        conflict.id, conflict.field, conflict.mapping
                    ))?;
                }
                Ok(exit::OK)
            })
        }
    }
}

fn list(flows: &Path, args: ConflictsArgs) -> anyhow::Result<u8> {
    let names = Names::of(&Project::load_dir(flows));
    let url = args.state.url;
    runtime()?.block_on(async move {
        let store = Store::open(&url)
            .await
            .with_context(|| format!("cannot open the state store {url}"))?;
        let listing = conflicts::list(&store, &names, args.mapping.as_deref(), args.recent).await?;
        let text = match args.format {
            Format::Json => format!("{}\n", serde_json::to_string_pretty(&listing)?),
            Format::Text => listing_text(&listing),
        };
        crate::cli::emit(&text)?;
        Ok(exit::OK)
    })
}

fn value(value: Option<&serde_json::Value>) -> String {
    value.map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

fn item_text(out: &mut String, item: &ConflictItem) {
    let c = &item.conflict;
    let _ = writeln!(
        out,
        "\n{}  {} `{}`  ({}, {})",
        c.id,
        c.mapping,
        c.field,
        c.state.as_str(),
        c.at.format("%Y-%m-%d %H:%M:%S")
    );
    let record = |r: &Option<tether_engine::ops::RecordRef>| {
        r.as_ref().map(|r| format!("  {r}")).unwrap_or_default()
    };
    let _ = writeln!(out, "  source: {}{}", c.source_value, record(&item.source));
    let _ = writeln!(out, "  target: {}{}", c.target_value, record(&item.target));
    let _ = writeln!(out, "  last synced: {}", value(c.base_value.as_ref()));
    match (&c.choice, c.state) {
        (Some(choice), _) => {
            let _ = writeln!(
                out,
                "  chosen: {}",
                serde_json::to_string(choice).unwrap_or_default()
            );
        }
        (None, tether_engine::store::ConflictState::Held) => {}
        (None, _) => {
            let _ = writeln!(out, "  {}", c.resolution);
        }
    }
}

fn listing_text(listing: &Listing) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} held for a decision, {} decided and waiting for the next run",
        listing.held.len(),
        listing.resolved.len()
    );
    for item in listing.held.iter().chain(&listing.resolved) {
        item_text(&mut out, item);
    }
    if !listing.held.is_empty() {
        let _ = writeln!(
            out,
            "\nDecide one: `tether conflicts resolve ID --take source|target|value V`"
        );
    }
    if !listing.recent.is_empty() {
        let _ = writeln!(out, "\nlatest decided:");
        for item in &listing.recent {
            item_text(&mut out, item);
        }
    }
    out
}
