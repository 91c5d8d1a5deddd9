//! The console's pages, each a pure function from what a `tether_engine::ops` function
//! returned to HTML: overview, runs, one run, parked records, conflicts, a record, and the
//! login page. Actions are forms the console's script sends to `/api/` as JSON.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use tether_engine::ops::conflicts::{ConflictItem, Listing};
use tether_engine::ops::parked::{Overview as ParkedOverview, ParkedGroup, ParkedItem};
use tether_engine::ops::record::{Found, RecordView};
use tether_engine::ops::runs::{Health, Overview, RunDetail, RunSummary};
use tether_engine::ops::{RecordRef, count_of};
use tether_engine::store::{Choice, ConflictState, HistoryEntry, RunOutcome, Side};

use super::html::{api_form, badge, esc, hidden, layout, opt_value, record_link, time, value};

/// An enum's name as the API spells it (`rule-failed`, `match-key`).
fn kebab(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn outcome_badge(outcome: Option<RunOutcome>) -> String {
    match outcome {
        Some(RunOutcome::Ok) => badge("ok", "ok"),
        Some(RunOutcome::Failed) => badge("bad", "failed"),
        Some(RunOutcome::CircuitBreaker) => badge("bad", "circuit breaker"),
        Some(RunOutcome::Cancelled) => badge("warn", "cancelled"),
        None => badge("muted", "running or unfinished"),
    }
}

fn health_badge(health: Health) -> String {
    match health {
        Health::Ok => badge("ok", "healthy"),
        Health::Attention => badge("warn", "needs attention"),
        Health::Failing => badge("bad", "failing"),
        Health::NotRun => badge("muted", "not run"),
    }
}

fn run_link(id: &str) -> String {
    format!(
        "<a href=\"/console/runs/{}\"><code>{}</code></a>",
        super::html::query_value(id),
        esc(id)
    )
}

/// A resync form for a mapping (whole) or one record of it.
fn resync_form(mapping: &str, record: Option<&str>) -> String {
    let mut fields = hidden("mapping", mapping, false);
    fields.push_str(&format!(
        "<input type=\"hidden\" name=\"record\" value=\"{}\" data-nullable>",
        esc(record.unwrap_or(""))
    ));
    if record.is_none() {
        fields.push_str(
            "<label class=\"check\"><input type=\"checkbox\" name=\"reset_cursors\"> reset cursors</label>",
        );
    } else {
        fields.push_str("<input type=\"hidden\" name=\"reset_cursors\" value=\"false\" data-json>");
    }
    let label = if record.is_some() {
        "Resync this record"
    } else {
        "Resync mapping"
    };
    fields.push_str(&format!("<button type=\"submit\">{label}</button>"));
    api_form("/api/resync", "resync", false, &fields)
}

/// The generic figures of a system or a status extra, key by key.
fn figures(map: &Map<String, Value>) -> String {
    let mut out = String::from("<dl class=\"figures\">");
    for (key, v) in map {
        let _ = write!(
            out,
            "<dt>{}</dt><dd>{}</dd>",
            esc(&key.replace('_', " ")),
            value(v)
        );
    }
    out.push_str("</dl>");
    out
}

fn runs_table(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "<p class=\"muted\">No runs yet.</p>".to_owned();
    }
    let mut out = String::from(
        "<table><thead><tr><th>Run</th><th>Started</th><th>Took</th><th>Outcome</th><th>Covers</th>\
<th class=\"num\">Writes</th><th class=\"num\">Parked</th><th class=\"num\">Conflicts</th></tr></thead><tbody>",
    );
    for run in runs {
        let covers = if run.mappings.is_empty() {
            run.flows.join(", ")
        } else {
            run.mappings.join(", ")
        };
        let mut outcome = outcome_badge(run.outcome);
        for s in &run.stopped {
            let _ = write!(
                outcome,
                "<div class=\"small\">{} stopped: {}</div>",
                esc(&s.mapping),
                esc(&s.reason)
            );
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{outcome}</td><td>{}</td><td class=\"num\">{}</td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            run_link(&run.id),
            match &run.trigger {
                Some(trigger) => format!(
                    "{}<div class=\"small\">{}</div>",
                    time(&run.started_at),
                    esc(trigger)
                ),
                None => time(&run.started_at),
            },
            run.seconds
                .map_or_else(String::new, |s| format!("{s:.1} s")),
            esc(if covers.is_empty() {
                "all flows"
            } else {
                &covers
            }),
            run.writes,
            run.parked,
            run.conflicts,
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The overview page.
pub fn overview(o: &Overview, status: &Map<String, Value>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<section class=\"cards\">\
<a class=\"card\" href=\"/console/parked\"><strong>{}</strong><span>parked records</span></a>\
<a class=\"card\" href=\"/console/conflicts\"><strong>{}</strong><span>conflicts held for you</span></a>\
<a class=\"card\" href=\"/console/runs\"><strong>{}</strong><span>flows</span></a></section>",
        o.parked,
        o.held,
        o.flows.len()
    );
    for flow in &o.flows {
        let _ = write!(
            body,
            "<section><h2>Flow <code>{}</code></h2><table><thead><tr><th>Mapping</th><th>Health</th>\
<th class=\"num\">Linked</th><th class=\"num\">Parked</th><th class=\"num\">Held</th><th>Last run</th><th>Resync</th></tr></thead><tbody>",
            esc(&flow.flow)
        );
        for m in &flow.mappings {
            let last = m.last_run.as_ref().map_or_else(
                || "<span class=\"muted\">never</span>".to_owned(),
                |r| {
                    format!(
                        "{} {} {}",
                        time(&r.started_at),
                        outcome_badge(r.outcome),
                        run_link(&r.id)
                    )
                },
            );
            let _ = write!(
                body,
                "<tr><td><strong>{}</strong><div class=\"small\">{} → {}</div></td><td>{}<div class=\"small\">{}</div></td>\
<td class=\"num\">{}</td><td class=\"num\"><a href=\"/console/parked\">{}</a></td><td class=\"num\"><a href=\"/console/conflicts\">{}</a></td><td>{last}</td><td>{}</td></tr>",
                esc(&m.mapping),
                esc(&m.source.label),
                esc(&m.target.label),
                health_badge(m.health),
                esc(&m.health_reason),
                m.pairs,
                m.parked,
                m.held,
                resync_form(&m.mapping, None),
            );
        }
        body.push_str("</tbody></table></section>");
    }
    body.push_str("<section><h2>Systems</h2>");
    if o.systems.is_empty() {
        body.push_str("<p class=\"muted\">No run has used a system yet.</p>");
    } else {
        body.push_str("<div class=\"systems\">");
        for s in &o.systems {
            let _ = write!(
                body,
                "<article class=\"system\"><h3>{} <code>{}</code></h3><p class=\"small\">as of run {} at {}</p>{}</article>",
                esc(&s.title),
                esc(&s.system),
                run_link(&s.run_id),
                time(&s.at),
                figures(&s.figures)
            );
        }
        body.push_str("</div>");
    }
    body.push_str("</section>");
    if !status.is_empty() {
        let _ = write!(
            body,
            "<section><h2>Status</h2>{}</section>",
            figures(status)
        );
    }
    let _ = write!(
        body,
        "<section><h2>Latest runs</h2>{}<p><a href=\"/console/runs\">All runs</a></p></section>",
        runs_table(&o.recent_runs)
    );
    layout("Overview", "Overview", &body, true)
}

/// The runs page.
pub fn runs(list: &[RunSummary]) -> String {
    layout("Runs", "Runs", &runs_table(list), true)
}

/// One run with its per-mapping and per-system reports.
pub fn run(d: &RunDetail) -> String {
    let mut body = runs_table(std::slice::from_ref(&d.run));
    body.push_str("<h2>Per mapping</h2>");
    body.push_str(&report_table(&d.reports, "mapping"));
    body.push_str("<h2>Per system</h2>");
    body.push_str(&report_table(&d.systems, "system"));
    layout(&format!("Run {}", d.run.id), "Runs", &body, true)
}

/// Reports as a table: one row per report, one column per scalar field (in the order the
/// first report has them); lists of examples under the table.
fn report_table(reports: &[Value], key: &str) -> String {
    if reports.is_empty() {
        return "<p class=\"muted\">Nothing reported.</p>".to_owned();
    }
    let mut columns: Vec<String> = Vec::new();
    for r in reports {
        if let Some(o) = r.as_object() {
            for (k, v) in o {
                if k != key && !v.is_array() && !v.is_object() && !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let mut out = format!(
        "<div class=\"wide\"><table><thead><tr><th>{}</th>",
        esc(key)
    );
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", esc(&c.replace('_', " ")));
    }
    out.push_str("</tr></thead><tbody>");
    let mut lists = String::new();
    for r in reports {
        let name = r.get(key).map(value).unwrap_or_default();
        let _ = write!(out, "<tr><th>{name}</th>");
        for c in &columns {
            let _ = write!(out, "<td>{}</td>", r.get(c).map(value).unwrap_or_default());
        }
        out.push_str("</tr>");
        if let Some(o) = r.as_object() {
            for (k, v) in o {
                if let Some(items) = v.as_array().filter(|a| !a.is_empty()) {
                    let _ = write!(
                        lists,
                        "<p><strong>{name}</strong>: {}</p><ul>",
                        esc(&k.replace('_', " "))
                    );
                    for item in items {
                        let _ = write!(lists, "<li>{}</li>", value(item));
                    }
                    lists.push_str("</ul>");
                }
            }
        }
    }
    out.push_str("</tbody></table></div>");
    out.push_str(&lists);
    out
}

fn side_word(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Target => "target",
    }
}

fn group_refs(g: &ParkedGroup) -> Vec<String> {
    match (&g.system, &g.entity) {
        (Some(system), Some(entity)) => g
            .record_ids
            .iter()
            .map(|id| format!("{system}:{entity}:{id}"))
            .collect(),
        _ => Vec::new(),
    }
}

fn item_ref(item: &ParkedItem) -> Option<String> {
    Some(format!(
        "{}:{}:{}",
        item.system.as_ref()?,
        item.entity.as_ref()?,
        item.record.record_id
    ))
}

/// Buttons that retry, or set aside, the given records of a mapping.
fn parked_actions(mapping: &str, refs: &[String], label: &str, skipped: bool) -> String {
    let mut fields = hidden("mapping", mapping, false);
    for r in refs {
        fields.push_str(&hidden("records", r, true));
    }
    let mut out = api_form(
        "/api/parked/retry",
        "inline",
        true,
        &format!("{fields}<button type=\"submit\">Retry {label}</button>"),
    );
    if !skipped {
        out.push_str(&api_form(
            "/api/parked/skip",
            "inline",
            true,
            &format!(
                "{fields}<button type=\"submit\" class=\"secondary\">Set aside {label}</button>"
            ),
        ));
    }
    out
}

/// The parked page: groups by cause with bulk actions, then every record with its own.
pub fn parked(o: &ParkedOverview, items: &[ParkedItem], skipped: bool) -> String {
    let mut body = format!(
        "<nav class=\"tabs\"><a href=\"/console/parked\"{}>Parked ({})</a><a href=\"/console/parked?skipped=true\"{}>Set aside ({})</a></nav>",
        if skipped {
            ""
        } else {
            " aria-current=\"page\""
        },
        o.parked,
        if skipped {
            " aria-current=\"page\""
        } else {
            ""
        },
        o.skipped
    );
    body.push_str(if skipped {
        "<p>Records set aside stay here until their source changes; then the next run tries them again. Retry takes them back now.</p>"
    } else {
        "<p>Parked records are tried again on every run. Fix the cause in the system, then retry; or set a record aside until its source changes.</p>"
    });
    if o.groups.is_empty() {
        body.push_str("<p class=\"empty\">Nothing here.</p>");
    }
    body.push_str("<section class=\"groups\"><h2>By cause</h2>");
    for g in &o.groups {
        let refs = group_refs(g);
        let mut values = String::new();
        if !g.values.is_empty() {
            values.push_str("<p class=\"small\">Values: ");
            let shown: Vec<String> = g
                .values
                .iter()
                .take(12)
                .map(|v| format!("<code>{}</code>", esc(v)))
                .collect();
            values.push_str(&shown.join(" "));
            if g.values.len() > 12 {
                let _ = write!(values, " and {} more", g.values.len() - 12);
            }
            values.push_str("</p>");
        }
        let _ = write!(
            body,
            "<article class=\"group\"><h3>{}</h3><p class=\"small\">{} · {} side · {}</p>{values}\
<details><summary>Example: {}</summary><pre>{}</pre></details><div class=\"actions\">{}</div></article>",
            esc(&g.summary),
            esc(&g.mapping),
            side_word(g.side),
            badge("muted", &kebab(g.cause)),
            esc(&g.example.record_id),
            esc(&g.example.reason),
            parked_actions(&g.mapping, &refs, &format!("all {}", g.count), skipped),
        );
    }
    body.push_str("</section>");
    if !items.is_empty() {
        let _ = write!(
            body,
            "<section><h2>Record by record</h2>\
<form class=\"api bulk\" id=\"bulk\" data-api=\"/api/parked/retry\" data-reload><button type=\"submit\">Retry selected</button>{}\
<output class=\"answer\" aria-live=\"polite\"></output></form>\
<table><thead><tr><th><input type=\"checkbox\" data-select-all=\"records\" aria-label=\"select all\"></th><th>Record</th><th>Mapping</th><th>Reason</th><th class=\"num\">Attempts</th><th>Last tried</th><th></th></tr></thead><tbody>",
            if skipped {
                ""
            } else {
                "<button type=\"submit\" class=\"secondary\" data-api=\"/api/parked/skip\">Set aside selected</button>"
            }
        );
        for item in items {
            let reference = item_ref(item);
            let record = reference.as_deref().map_or_else(
                || format!("<code>{}</code>", esc(&item.record.record_id)),
                record_link,
            );
            let checkbox = reference.as_deref().map_or_else(String::new, |r| {
                format!(
                    "<input type=\"checkbox\" name=\"records\" value=\"{}\" form=\"bulk\" data-list aria-label=\"select\">",
                    esc(r)
                )
            });
            let mut tries = String::new();
            if item.tries.len() > 1 {
                tries.push_str("<details><summary>attempts</summary><ul>");
                for t in &item.tries {
                    let _ = write!(tries, "<li>{}: {}</li>", time(&t.at), esc(&t.reason));
                }
                tries.push_str("</ul></details>");
            }
            let actions = reference
                .as_ref()
                .map(|r| parked_actions(&item.record.mapping, std::slice::from_ref(r), "", skipped))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr class=\"parked-record\"><td>{checkbox}</td><td>{record}</td><td>{}<div class=\"small\">{} side</div></td>\
<td>{}{tries}</td><td class=\"num\">{}</td><td>{}</td><td class=\"actions\">{actions}</td></tr>",
                esc(&item.record.mapping),
                side_word(item.record.side),
                esc(&item.record.reason),
                item.record.attempts,
                time(&item.record.last_tried_at),
            );
        }
        body.push_str("</tbody></table></section>");
    }
    layout("Parked records", "Parked", &body, true)
}

fn record_of(r: Option<&RecordRef>) -> String {
    r.map_or_else(
        || "<span class=\"muted\">gone</span>".to_owned(),
        |r| record_link(&r.to_string()),
    )
}

fn choice_text(choice: Option<&Choice>) -> String {
    match choice {
        Some(Choice::Source) => "the source's value".to_owned(),
        Some(Choice::Target) => "the target's value".to_owned(),
        Some(Choice::Value(v)) => format!("the value {}", value(v)),
        None => "<span class=\"muted\">none</span>".to_owned(),
    }
}

fn held_card(item: &ConflictItem) -> String {
    let c = &item.conflict;
    let endpoint = format!(
        "/api/conflicts/{}/resolve",
        super::html::query_value(c.id.as_str())
    );
    let choose = api_form(
        &endpoint,
        "choose",
        true,
        "<button type=\"submit\" name=\"take\" value=\"source\">Take source</button>\
<button type=\"submit\" name=\"take\" value=\"target\">Take target</button>\
<span class=\"or\">or</span><input name=\"value\" aria-label=\"another value\" placeholder=\"another value\">\
<button type=\"submit\" name=\"take\" value=\"value\" class=\"secondary\">Use this value</button>",
    );
    format!(
        "<article class=\"conflict\" id=\"conflict-{id}\"><h3>Field <code>{field}</code> of {mapping}</h3>\
<p class=\"small\">held since {at} · run {run}</p>\
<table class=\"values\"><tr><th>Source</th><td>{source}</td><td class=\"value\">{sv}</td></tr>\
<tr><th>Target</th><td>{target}</td><td class=\"value\">{tv}</td></tr>\
<tr><th>Last synced</th><td></td><td class=\"value\">{bv}</td></tr></table>{choose}</article>",
        id = esc(c.id.as_str()),
        field = esc(&c.field),
        mapping = esc(&c.mapping),
        at = time(&c.at),
        run = run_link(c.run_id.as_str()),
        source = record_of(item.source.as_ref()),
        sv = value(&c.source_value),
        target = record_of(item.target.as_ref()),
        tv = value(&c.target_value),
        bv = opt_value(c.base_value.as_ref()),
    )
}

/// The conflicts page: held ones with both values, the base and the choice; resolved ones
/// waiting for their run; the latest decided ones.
pub fn conflicts(l: &Listing) -> String {
    let mut body = format!(
        "<section><h2>Held for you ({})</h2><p>A held field is left as it is on both sides until you choose; the next run of its mapping writes the choice.</p>",
        l.held.len()
    );
    if l.held.is_empty() {
        body.push_str("<p class=\"empty\">No conflict is held.</p>");
    }
    for item in &l.held {
        body.push_str(&held_card(item));
    }
    body.push_str("</section>");
    let table = |items: &[ConflictItem], caption: &str, empty: &str| {
        let mut out = format!("<section><h2>{}</h2>", esc(caption));
        if items.is_empty() {
            let _ = write!(out, "<p class=\"empty\">{}</p>", esc(empty));
            out.push_str("</section>");
            return out;
        }
        out.push_str(
            "<table><thead><tr><th>Field</th><th>Mapping</th><th>Source</th><th>Target</th><th>Base</th><th>Decided</th><th>State</th><th>When</th></tr></thead><tbody>",
        );
        for item in items {
            let c = &item.conflict;
            let decided = match c.state {
                ConflictState::Decided => format!(
                    "{} ({})",
                    esc(&c.resolution),
                    c.winner.map_or("neither", side_word)
                ),
                _ => choice_text(c.choice.as_ref()),
            };
            let state = match c.state {
                ConflictState::Held => badge("warn", "held"),
                ConflictState::Resolved => badge("warn", "waiting for its run"),
                ConflictState::Applied => badge("ok", "written"),
                ConflictState::Decided => badge("muted", "decided by policy"),
            };
            let when = c.applied_at.or(c.resolved_at).unwrap_or(c.at);
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}<div>{}</div></td><td>{}<div>{}</div></td><td>{}</td><td>{decided}</td><td>{state}</td><td>{}</td></tr>",
                esc(&c.field),
                esc(&c.mapping),
                record_of(item.source.as_ref()),
                value(&c.source_value),
                record_of(item.target.as_ref()),
                value(&c.target_value),
                opt_value(c.base_value.as_ref()),
                time(&when),
            );
        }
        out.push_str("</tbody></table></section>");
        out
    };
    body.push_str(&table(
        &l.resolved,
        "Resolved, written by the next run",
        "None waiting.",
    ));
    body.push_str(&table(&l.recent, "Recently decided", "None yet."));
    layout("Conflicts", "Conflicts", &body, true)
}

fn history_table(entries: &[HistoryEntry]) -> String {
    if entries.is_empty() {
        return "<p class=\"empty\">No write recorded (the change log keeps writes for its retention).</p>".to_owned();
    }
    let mut out = String::from(
        "<table class=\"history\"><thead><tr><th>When</th><th>What</th><th>Record</th><th>Mapping</th><th>Changes</th></tr></thead><tbody>",
    );
    for e in entries {
        // One reason for the whole write is said once.
        let common = e
            .changes
            .first()
            .map(|c| c.why.as_str())
            .filter(|why| e.changes.iter().all(|c| c.why == *why));
        let mut changes = String::from("<ul class=\"changes\">");
        for c in &e.changes {
            if common.is_some() && !c.field.is_empty() {
                let _ = write!(
                    changes,
                    "<li><code>{}</code>: {} → {}</li>",
                    esc(&c.field),
                    opt_value(c.old.as_ref()),
                    opt_value(c.new.as_ref())
                );
            } else if c.field.is_empty() {
                let _ = write!(changes, "<li>{}</li>", esc(&c.why));
            } else {
                let _ = write!(
                    changes,
                    "<li><code>{}</code>: {} → {} <span class=\"small\">{}</span></li>",
                    esc(&c.field),
                    opt_value(c.old.as_ref()),
                    opt_value(c.new.as_ref()),
                    esc(&c.why)
                );
            }
        }
        changes.push_str("</ul>");
        let action = kebab(e.action);
        let _ = write!(
            out,
            "<tr class=\"entry\"><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{changes}</td></tr>",
            time(&e.at),
            badge("muted", &action),
            common.map_or_else(String::new, |why| format!(
                "<div class=\"small\">{}</div>",
                esc(why)
            )),
            record_link(&format!(
                "{}:{}:{}",
                e.record.system, e.record.entity, e.record.id
            )),
            esc(&e.mapping),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn record_section(v: &RecordView) -> String {
    let reference = v.record.to_string();
    let mut out = format!(
        "<article class=\"record-view\"><h2>{} <code>{}</code></h2>",
        esc(&v.label),
        esc(&reference)
    );
    out.push_str("<h3>Identity and counterparts</h3>");
    if v.identities.is_empty() {
        out.push_str("<p class=\"empty\">Not linked to anything yet.</p>");
    }
    for i in &v.identities {
        let _ = write!(
            out,
            "<p>{} <code>{}</code> <span class=\"small\">linked {} by {}</span></p><ul>",
            esc(&i.identity),
            esc(&i.global_id),
            time(&i.linked_at),
            esc(&kebab(i.origin))
        );
        for c in &i.counterparts {
            let _ = write!(
                out,
                "<li>{} {}</li>",
                esc(&c.label),
                record_link(&c.record.to_string())
            );
        }
        if i.counterparts.is_empty() {
            out.push_str("<li class=\"muted\">no counterpart</li>");
        }
        out.push_str("</ul>");
    }
    out.push_str("<h3>Fields as last synced</h3>");
    if v.pairs.is_empty() {
        out.push_str("<p class=\"empty\">No synced pair holds this record.</p>");
    }
    for p in &v.pairs {
        let _ = write!(
            out,
            "<section class=\"pair\"><h4>{} <span class=\"small\">synced {}</span></h4>\
<table><thead><tr><th>{} {}</th><th>{} {}</th><th>Value</th></tr></thead><tbody>",
            esc(&p.mapping),
            time(&p.synced_at),
            esc(&p.source_label),
            record_link(&p.source.to_string()),
            esc(&p.target_label),
            record_link(&p.target.to_string()),
        );
        for f in &p.fields {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                f.source_field.as_deref().map_or_else(
                    || "<span class=\"muted\">computed</span>".to_owned(),
                    |s| format!("<code>{}</code>", esc(s))
                ),
                esc(&f.target_field),
                value(&f.value)
            );
        }
        let _ = write!(
            out,
            "</tbody></table>{}</section>",
            resync_form(&p.mapping, Some(&reference))
        );
    }
    if !v.parked.is_empty() {
        out.push_str("<h3>Parked</h3><ul>");
        for p in &v.parked {
            let _ = write!(
                out,
                "<li>{} ({} side){}: {}</li>",
                esc(&p.mapping),
                side_word(p.side),
                if p.is_skipped() { " set aside" } else { "" },
                esc(&p.reason)
            );
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<h3>History</h3>{}</article>",
        history_table(&v.history)
    );
    out
}

/// The record page: the search form, and what it found.
pub fn record(query: &str, found: Option<&Found>, problem: Option<&str>) -> String {
    let mut body = format!(
        "<form class=\"search\" method=\"get\" action=\"/console/record\"><label for=\"q\">Record or match key</label>\
<input id=\"q\" name=\"q\" value=\"{}\" placeholder=\"keap:companies:42 or post@example.com\" autofocus>\
<button type=\"submit\">Look up</button></form>",
        esc(query)
    );
    if let Some(problem) = problem {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(problem));
    }
    if let Some(found) = found {
        if found.records.is_empty() {
            let _ = write!(
                body,
                "<p class=\"empty\">Nothing found for <code>{}</code>{}.</p>",
                esc(&found.query),
                if found.by == "key" {
                    " among the match keys the engine keeps"
                } else {
                    ""
                }
            );
        } else if found.records.len() > 1 {
            let _ = write!(
                body,
                "<p>{} have this match key.</p>",
                count_of(found.records.len(), "record", "records")
            );
        }
        for v in &found.records {
            body.push_str(&record_section(v));
        }
    }
    layout("Records", "Records", &body, true)
}

/// The login page; `problem` says why the last try failed.
pub fn login(problem: Option<&str>, token_set: bool, next: &str) -> String {
    let mut body = String::new();
    if let Some(problem) = problem {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(problem));
    }
    if token_set {
        let _ = write!(
            body,
            "<form class=\"login\" method=\"post\" action=\"/console/login\">\
<p>This server asks for its admin token (<code>TETHER_ADMIN_TOKEN</code>). The browser keeps the session until it closes.</p>\
<label for=\"token\">Admin token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\">Log in</button></form>",
            esc(next)
        );
    } else {
        body.push_str(
            "<p>This server has no admin token and listens on loopback: the console is open. <a href=\"/console\">Go to the overview</a>.</p>",
        );
    }
    layout("Log in", "", &body, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use tether_engine::ops::parked::{CauseKind, Example};
    use tether_engine::store::{Conflict, ConflictId, GlobalId, ParkedRecord, RunId};

    fn parked_item(id: &str, reason: &str) -> ParkedItem {
        ParkedItem {
            record: ParkedRecord {
                mapping: "companies".into(),
                side: Side::Source,
                record_id: id.into(),
                reason: reason.into(),
                field: None,
                value: None,
                attempts: 2,
                first_parked_at: Utc::now(),
                last_tried_at: Utc::now(),
                skipped_at: None,
                skipped_hash: None,
                deleting: false,
                retry_at: None,
            },
            system: Some("keap".into()),
            entity: Some("companies".into()),
            cause: CauseKind::RuleFailed,
            tries: vec![],
        }
    }

    #[test]
    fn the_parked_page_groups_and_offers_single_and_bulk_actions_escaped() {
        let o = ParkedOverview {
            parked: 2,
            skipped: 0,
            groups: vec![ParkedGroup {
                mapping: "companies".into(),
                side: Side::Source,
                system: Some("keap".into()),
                entity: Some("companies".into()),
                cause: CauseKind::RuleFailed,
                count: 2,
                summary: "2 Keap companies have a country <XXX>".into(),
                values: vec!["<XXX>".into()],
                record_ids: vec!["1".into(), "2".into()],
                example: Example {
                    record_id: "1".into(),
                    reason: "country <XXX> is not ISO".into(),
                },
            }],
        };
        let items = [
            parked_item("1", "<script>x</script>"),
            parked_item("2", "r"),
        ];
        let page = parked(&o, &items, false);
        assert!(page.contains("2 Keap companies have a country &lt;XXX&gt;"));
        assert!(!page.contains("<script>x"), "reasons are escaped");
        assert!(page.contains("Retry all 2"));
        assert!(page.contains("Set aside all 2"));
        assert!(page.contains("value=\"keap:companies:1\""));
        assert!(page.contains("data-api=\"/api/parked/retry\""));
        assert!(page.contains("Retry selected"));
        assert_eq!(page.matches("class=\"parked-record\"").count(), 2);
    }

    #[test]
    fn a_held_conflict_shows_both_values_the_base_and_the_choice() {
        let conflict = Conflict {
            id: ConflictId::new("C1"),
            run_id: RunId::new("R1"),
            mapping: "companies".into(),
            global_id: GlobalId::new("G"),
            field: "email".into(),
            source_value: json!("keap@hold.example"),
            target_value: json!("erp@hold.example"),
            base_value: Some(json!("post@hold.example")),
            resolution: "manual".into(),
            winner: None,
            at: Utc::now(),
            state: ConflictState::Held,
            choice: None,
            resolved_at: None,
            applied_at: None,
        };
        let listing = Listing {
            held: vec![ConflictItem {
                conflict,
                source: Some(RecordRef {
                    system: "keap".into(),
                    entity: "companies".into(),
                    id: "7".into(),
                }),
                target: None,
            }],
            resolved: vec![],
            recent: vec![],
        };
        let page = conflicts(&listing);
        for text in [
            "keap@hold.example",
            "erp@hold.example",
            "post@hold.example",
            "Take source",
            "Take target",
            "/api/conflicts/C1/resolve",
            "/console/record?q=keap:companies:7",
        ] {
            assert!(page.contains(text), "{text}");
        }
    }

    #[test]
    fn the_overview_shows_every_figure_a_system_reports_and_a_run_its_reports() {
        use tether_engine::ops::EntityName;
        use tether_engine::ops::runs::{FlowOverview, MappingOverview, SystemFigures};
        let side = |system: &str| EntityName {
            system: system.into(),
            entity: "companies".into(),
            label: format!("{system} <companies>"),
        };
        let mut figures = Map::new();
        figures.insert("requests".into(), json!(12));
        figures.insert("daily_allowance_left".into(), json!(24_000));
        let o = Overview {
            flows: vec![FlowOverview {
                flow: "keap-to-customerp".into(),
                mappings: vec![MappingOverview {
                    mapping: "companies".into(),
                    flow: "keap-to-customerp".into(),
                    identity: "customer".into(),
                    source: side("keap"),
                    target: side("customerp"),
                    health: Health::Failing,
                    health_reason: "stopped: keap answers 401".into(),
                    pairs: 41,
                    parked: 2,
                    held: 1,
                    open_intents: 0,
                    last_run: None,
                    last_report: None,
                }],
            }],
            systems: vec![SystemFigures {
                system: "keap".into(),
                title: "Keap".into(),
                run_id: "R1".into(),
                at: Utc::now(),
                figures,
            }],
            recent_runs: vec![],
            parked: 2,
            held: 1,
        };
        let page = overview(&o, &Map::new());
        for text in [
            "keap &lt;companies&gt; → customerp &lt;companies&gt;",
            "failing",
            "stopped: keap answers 401",
            "daily allowance left",
            "24000",
            "Resync mapping",
            "name=\"reset_cursors\"",
            "data-api=\"/api/resync\"",
        ] {
            assert!(page.contains(text), "{text}");
        }
        assert!(
            !page.contains("<h2>Status</h2>"),
            "no extra status: no section"
        );

        let report = vec![
            json!({ "mapping": "companies", "created_target": 3, "stopped": null,
                    "malformed_examples": [{ "id": "<x>", "reason": "bad" }] }),
        ];
        let table = report_table(&report, "mapping");
        assert!(table.contains("created target"));
        assert!(table.contains("malformed examples"));
        assert!(!table.contains("<x>"), "escaped: {table}");
    }

    #[test]
    fn the_login_page_never_shows_a_token_and_says_when_none_is_needed() {
        let page = login(
            Some("That is not the admin token."),
            true,
            "/console/parked",
        );
        assert!(page.contains("type=\"password\""));
        assert!(page.contains("TETHER_ADMIN_TOKEN"));
        assert!(page.contains("value=\"/console/parked\""));
        assert!(login(None, false, "/console").contains("no admin token"));
    }
}
