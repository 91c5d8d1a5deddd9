//! Checks across files that the schema cannot express: systems, entities and mappings that
//! must exist, references and their cycles, required fields nobody fills, two identity types
//! claiming one field, environment variables, and `${...}` where it is not allowed.
//!
//! Checks that need a compiled mapping (paths against field lists, JSONPath, templates,
//! defaults, value maps, inverses) belong to `mapping::compile`; `validate` runs both.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use indexmap::IndexMap;

use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::env::EnvString;
use crate::spec::flow::{FlowFile, MappingSpec, RuleSpec, Side};
use crate::spec::load::{Loaded, Project};
use crate::spec::node::{Checked, Loc, Pos, did_you_mean};
use crate::spec::system::{Auth, EntitySpec, FieldSpec, SystemFile};

/// Runs every cross-file check and returns what it found.
pub fn check(project: &Project) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for system in project.systems.values() {
        check_system_env(system, &mut out);
        check_file_name(&system.path, &system.spec.system, "system", &mut out);
        check_webhooks(system, &mut out);
        check_quota_settings(system, &mut out);
    }
    for flow in &project.flows {
        check_flow_strings(flow, &mut out);
        check_schedule(flow, &mut out);
        check_file_name(&flow.path, &flow.spec.flow, "flow", &mut out);
        check_flow_systems(project, flow, &mut out);
        check_mapping_names(project, flow, &mut out);
        check_references(project, flow, &mut out);
        check_required_fields(project, flow, &mut out);
    }
    check_reference_cycles(project, &mut out);
    check_identity_conflicts(project, &mut out);
    out
}

fn check_file_name(path: &Path, name: &Loc<String>, kind: &str, out: &mut Vec<Diagnostic>) {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != name.value.as_str() && !stem.starts_with(name.value.as_str()) {
        out.push(
            Diagnostic::warning(
                path,
                Some(name.pos),
                Code::NameMismatch,
                format!(
                    "the {kind} is named `{}` but its file is `{stem}.yaml`",
                    name.value
                ),
            )
            .with_help(format!(
                "name the file `{}.yaml`, or the {kind} `{stem}`",
                name.value
            )),
        );
    }
}

/// Every place a system file may use `${VAR}`.
fn env_strings(system: &SystemFile) -> Vec<&Loc<EnvString>> {
    let mut strings = vec![&system.base_url];
    match &system.auth.value {
        Auth::None => {}
        Auth::Bearer { token } => strings.push(token),
        Auth::ApiKey { key, .. } => strings.push(key),
        Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            ..
        } => strings.extend([token_url, client_id, client_secret]),
        Auth::Salesforce {
            client_id,
            client_secret,
            ..
        } => strings.extend([client_id, client_secret]),
    }
    if let Some(hooks) = &system.webhooks {
        strings.push(&hooks.secret);
    }
    strings
}

/// Webhook objects name entities of the system.
fn check_webhooks(system: &Loaded<SystemFile>, out: &mut Vec<Diagnostic>) {
    let Some(hooks) = &system.spec.webhooks else {
        return;
    };
    let known: Vec<&str> = system.spec.entities.keys().map(String::as_str).collect();
    for entity in hooks.objects.values() {
        if !system.spec.entities.contains_key(&entity.value) {
            out.push(unknown_name(
                &system.path,
                entity,
                Code::UnknownEntity,
                "entity",
                &known,
            ));
        }
    }
}

/// A system's allowance reserve is a share and says where the allowance is read; each
/// entity's `full_listing_every` is a duration within range.
fn check_quota_settings(system: &Loaded<SystemFile>, out: &mut Vec<Diagnostic>) {
    if let Some(allowance) = &system.spec.allowance {
        let pos = allowance.reserve.as_ref().map(|r| r.pos);
        if let Err(message) = allowance.reserve() {
            out.push(
                Diagnostic::error(&system.path, pos, Code::InvalidValue, message)
                    .with_help("write a share such as `0.2`"),
            );
        }
        if !allowance.complete() {
            out.push(
                Diagnostic::error(
                    &system.path,
                    Some(system.spec.system.pos),
                    Code::MissingKey,
                    "`allowance` needs `usage_header`, or both `limit_header` and `used_header`",
                )
                .with_help("Salesforce: `usage_header: Sforce-Limit-Info`; Keap: `limit_header: x-keap-product-quota-limit` and `used_header: x-keap-product-quota-used`"),
            );
        }
    }
    for entity in system.spec.entities.values().filter_map(Checked::valid) {
        if let (Some(every), Err(message)) =
            (&entity.full_listing_every, entity.full_listing_every())
        {
            out.push(
                Diagnostic::error(&system.path, Some(every.pos), Code::InvalidValue, message)
                    .with_help("write a duration such as `30m` or `6h`"),
            );
        }
    }
}

/// A flow's schedule is a duration within range.
fn check_schedule(flow: &Loaded<FlowFile>, out: &mut Vec<Diagnostic>) {
    if let Some(schedule) = &flow.spec.schedule
        && let Err(message) = schedule.interval()
    {
        out.push(
            Diagnostic::error(
                &flow.path,
                Some(schedule.every.pos),
                Code::BadSchedule,
                message,
            )
            .with_help("write a duration such as `30s`, `5m` or `1h`"),
        );
    }
}

fn check_system_env(system: &Loaded<SystemFile>, out: &mut Vec<Diagnostic>) {
    let allowed: HashSet<(u32, u32)> = env_strings(&system.spec)
        .iter()
        .map(|s| (s.pos.line, s.pos.column))
        .collect();
    for value in env_strings(&system.spec) {
        if let Err(error) = value.value.parts() {
            out.push(Diagnostic::error(
                &system.path,
                Some(value.pos),
                Code::InvalidInterpolation,
                error.to_string(),
            ));
            continue;
        }
        for name in value.value.required_vars() {
            if std::env::var(name).map_or(true, |v| v.is_empty()) {
                out.push(
                    Diagnostic::warning(&system.path, Some(value.pos), Code::EnvUnset, format!("environment variable `{name}` is not set"))
                        .with_help(format!("set it before `tether run` (`export {name}=...`), or give a default: `${{{name}:-...}}`")),
                );
            }
        }
    }
    system.node.visit_strings(&mut |text, pos| {
        if text.contains("${") && !allowed.contains(&(pos.line, pos.column)) {
            out.push(interpolation_error(&system.path, pos));
        }
    });
}

fn interpolation_error(path: &Path, pos: Pos) -> Diagnostic {
    Diagnostic::error(
        path,
        Some(pos),
        Code::InterpolationNotAllowed,
        "`${...}` is only read from the environment in base URLs and credentials",
    )
    .with_help("write the value itself; credentials and URLs belong in the system file")
}

fn check_flow_strings(flow: &Loaded<FlowFile>, out: &mut Vec<Diagnostic>) {
    flow.node.visit_strings(&mut |text, pos| {
        if text.contains("${") {
            out.push(interpolation_error(&flow.path, pos));
        }
    });
}

fn unknown_name(
    path: &Path,
    name: &Loc<String>,
    code: Code,
    what: &str,
    known: &[&str],
) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        path,
        Some(name.pos),
        code,
        format!("unknown {what} `{}`", name.value),
    );
    match did_you_mean(&name.value, known.iter().copied()) {
        Some(best) => diagnostic.with_help(format!("did you mean `{best}`?")),
        None if known.is_empty() => diagnostic,
        None => diagnostic.with_help(format!("known: {}", known.join(", "))),
    }
}

fn entity<'p>(project: &'p Project, system: &str, entity: &str) -> Option<&'p EntitySpec> {
    project
        .systems
        .get(system)?
        .spec
        .entities
        .get(entity)?
        .valid()
}

fn check_flow_systems(project: &Project, flow: &Loaded<FlowFile>, out: &mut Vec<Diagnostic>) {
    let known: Vec<&str> = project.systems.keys().map(String::as_str).collect();
    let spec = &flow.spec;
    for (system, mapping_side) in [(&spec.source, Side::Source), (&spec.target, Side::Target)] {
        let Some(loaded) = project.systems.get(&system.value) else {
            out.push(
                unknown_name(&flow.path, system, Code::UnknownSystem, "system", &known).with_help(
                    format!(
                        "add `systems/{}.yaml` next to the flows, or fix the name",
                        system.value
                    ),
                ),
            );
            continue;
        };
        let entities: Vec<&str> = loaded.spec.entities.keys().map(String::as_str).collect();
        for mapping in spec.mappings.iter().filter_map(|m| m.valid()) {
            let name = match mapping_side {
                Side::Source => &mapping.source,
                Side::Target => &mapping.target,
            };
            if !loaded.spec.entities.contains_key(&name.value) {
                out.push(unknown_name(
                    &flow.path,
                    name,
                    Code::UnknownEntity,
                    &format!("entity of {}", system.value),
                    &entities,
                ));
            }
        }
    }
}

fn check_mapping_names(project: &Project, flow: &Loaded<FlowFile>, out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, Pos> = HashMap::new();
    for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
        if let Some(first) = seen.insert(&mapping.name.value, mapping.name.pos) {
            out.push(
                Diagnostic::error(
                    &flow.path,
                    Some(mapping.name.pos),
                    Code::DuplicateMapping,
                    format!(
                        "mapping `{}` is defined twice in this flow",
                        mapping.name.value
                    ),
                )
                .with_help(format!(
                    "the first is at line {}; give each mapping its own name",
                    first.line
                )),
            );
        }
    }
    for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
        let elsewhere = project
            .flows
            .iter()
            .filter(|other| other.path != flow.path)
            .find(|other| {
                other
                    .spec
                    .mappings
                    .iter()
                    .filter_map(|m| m.valid())
                    .any(|m| m.name.value == mapping.name.value)
            });
        if let Some(other) = elsewhere {
            out.push(
                Diagnostic::warning(
                    &flow.path,
                    Some(mapping.name.pos),
                    Code::DuplicateMapping,
                    format!(
                        "mapping `{}` is also defined in flow `{}`",
                        mapping.name.value, other.spec.flow.value
                    ),
                )
                .with_help(format!(
                    "commands must name it as `{}/{}`; a unique name is easier",
                    flow.spec.flow.value, mapping.name.value
                )),
            );
        }
    }
}

/// Finds the mapping a `ref` names: `NAME` in the same flow first, then anywhere, or
/// `FLOW/NAME`.
pub fn resolve_ref<'p>(
    project: &'p Project,
    flow: &'p FlowFile,
    name: &str,
) -> Option<(&'p FlowFile, &'p MappingSpec)> {
    if let Some((flow_name, mapping_name)) = name.split_once('/') {
        let other = project
            .flows
            .iter()
            .find(|f| f.spec.flow.value == flow_name)?;
        return other
            .spec
            .mappings
            .iter()
            .filter_map(|m| m.valid())
            .find(|m| m.name.value == mapping_name)
            .map(|m| (&other.spec, m));
    }
    if let Some(m) = flow
        .mappings
        .iter()
        .filter_map(|m| m.valid())
        .find(|m| m.name.value == name)
    {
        return Some((flow, m));
    }
    project
        .mappings()
        .find(|(_, m)| m.name.value == name)
        .map(|(f, m)| (&f.spec, m))
}

/// All rules of a mapping, sub-rules of arrays included.
pub fn all_rules(rules: &[crate::spec::node::Checked<RuleSpec>]) -> Vec<&RuleSpec> {
    let mut out = Vec::new();
    for rule in rules.iter().filter_map(|r| r.valid()) {
        out.push(rule);
        if let Some(items) = &rule.items {
            out.extend(all_rules(items));
        }
    }
    out
}

/// The first name of a dotted target path or JSONPath (`billing_address.city` ->
/// `billing_address`, `$.lines[0].sku` -> `lines`).
pub fn first_segment(path: &str) -> &str {
    let path = path
        .strip_prefix("$.")
        .or_else(|| path.strip_prefix('$'))
        .unwrap_or(path);
    let end = path.find(['.', '[']).unwrap_or(path.len());
    &path[..end]
}

fn check_references(project: &Project, flow: &Loaded<FlowFile>, out: &mut Vec<Diagnostic>) {
    let names: Vec<&str> = project
        .mappings()
        .map(|(_, m)| m.name.value.as_str())
        .collect();
    for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
        for rule in all_rules(&mapping.properties) {
            let Some(reference) = &rule.reference else {
                if rule.data_type.value == crate::spec::flow::DataType::Reference {
                    out.push(
                        Diagnostic::error(&flow.path, Some(rule.data_type.pos), Code::MissingRef, "a `reference` rule needs `ref`: the mapping whose links translate the id")
                            .with_help("add `ref: <mapping name>`"),
                    );
                }
                continue;
            };
            let Some((_, target_mapping)) = resolve_ref(project, &flow.spec, &reference.value)
            else {
                out.push(unknown_name(
                    &flow.path,
                    reference,
                    Code::UnknownMappingRef,
                    "mapping",
                    &names,
                ));
                continue;
            };
            check_reference_identity(project, flow, mapping, rule, reference, target_mapping, out);
            if let Some(key) = &rule.ref_key {
                let targets: Vec<&str> = target_mapping
                    .properties
                    .iter()
                    .filter_map(|r| r.valid())
                    .map(|r| r.target.value.as_str())
                    .collect();
                if !targets.contains(&key.value.as_str()) {
                    out.push(unknown_name(
                        &flow.path,
                        key,
                        Code::UnknownRefKey,
                        &format!("target path of `{}`", reference.value),
                        &targets,
                    ));
                }
            }
        }
    }
}

/// A reference must point at a mapping of the thing the field refers to: the field's
/// `references` entity on each side must be the referenced mapping's entity on that side.
fn check_reference_identity(
    project: &Project,
    flow: &Loaded<FlowFile>,
    mapping: &MappingSpec,
    rule: &RuleSpec,
    reference: &Loc<String>,
    referenced: &MappingSpec,
    out: &mut Vec<Diagnostic>,
) {
    let target_field = entity(project, &flow.spec.target.value, &mapping.target.value)
        .and_then(|e| field_at(&e.fields, &rule.target.value));
    let source_field = rule.source.as_ref().and_then(|source| {
        entity(project, &flow.spec.source.value, &mapping.source.value)
            .and_then(|e| field_at(&e.fields, &source.value))
    });
    let checks = [
        (
            target_field,
            &referenced.target.value,
            &flow.spec.target.value,
        ),
        (
            source_field,
            &referenced.source.value,
            &flow.spec.source.value,
        ),
    ];
    for (field, referenced_entity, system) in checks {
        let Some(points_at) = field.and_then(|f| f.references.as_ref()) else {
            continue;
        };
        if points_at != referenced_entity {
            out.push(
                Diagnostic::error(
                    &flow.path,
                    Some(reference.pos),
                    Code::RefIdentityMismatch,
                    format!(
                        "`{}` links {} records ({} `{}`), but this field refers to {} `{}`",
                        referenced.name.value,
                        referenced.identity.value,
                        system,
                        referenced_entity,
                        system,
                        points_at
                    ),
                )
                .with_help(format!(
                    "refer to the mapping whose {system} entity is `{points_at}`"
                )),
            );
            return;
        }
    }
}

/// Looks up a field by a dotted path or plain JSONPath through nested object and array fields.
pub fn field_at<'f>(fields: &'f IndexMap<String, FieldSpec>, path: &str) -> Option<&'f FieldSpec> {
    let path = path
        .strip_prefix("$.")
        .or_else(|| path.strip_prefix('$'))
        .unwrap_or(path);
    let mut current = fields;
    let mut found = None;
    for segment in split_path(path) {
        let field = current.get(segment)?;
        found = Some(field);
        if let Some(nested) = &field.fields {
            current = nested;
        }
    }
    found
}

/// The names of a path, without list selectors (`a[type=b].c[0]` -> `a`, `c`).
fn split_path(path: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'[' => {
                if depth == 0 && i > start {
                    names.push(&path[start..i]);
                }
                depth += 1;
            }
            b']' => {
                depth = depth.saturating_sub(1);
                start = i + 1;
            }
            b'.' if depth == 0 => {
                if i > start {
                    names.push(&path[start..i]);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth == 0 && start < path.len() {
        names.push(&path[start..]);
    }
    names
}

fn rule_writes(rule: &RuleSpec, mapping: &MappingSpec, forward: bool) -> bool {
    let direction = rule
        .direction
        .as_ref()
        .map_or(mapping.direction, |d| d.value);
    if forward {
        direction.forward()
    } else {
        direction.backward()
    }
}

fn check_required_fields(project: &Project, flow: &Loaded<FlowFile>, out: &mut Vec<Diagnostic>) {
    for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
        if mapping.direction.forward()
            && let Some(target) = entity(project, &flow.spec.target.value, &mapping.target.value)
        {
            let written: HashSet<&str> = mapping
                .properties
                .iter()
                .filter_map(|r| r.valid())
                .filter(|r| rule_writes(r, mapping, true))
                .map(|r| first_segment(&r.target.value))
                .collect();
            report_unmapped(
                &flow.path,
                &mapping.target,
                &flow.spec.target.value,
                &target.fields,
                &written,
                out,
            );
        }
        if mapping.direction.backward()
            && let Some(source) = entity(project, &flow.spec.source.value, &mapping.source.value)
        {
            let written: HashSet<&str> = mapping
                .properties
                .iter()
                .filter_map(|r| r.valid())
                .filter(|r| rule_writes(r, mapping, false))
                .flat_map(|r| source_fields_written(r))
                .collect();
            report_unmapped(
                &flow.path,
                &mapping.source,
                &flow.spec.source.value,
                &source.fields,
                &written,
                out,
            );
        }
    }
}

/// The top-level source fields a rule writes on the way back.
fn source_fields_written(rule: &RuleSpec) -> Vec<&str> {
    match (&rule.source, rule.inverse.as_ref().map(|i| &i.value)) {
        (_, Some(crate::spec::flow::Inverse::PerSource(per_source))) => {
            per_source.keys().map(|k| first_segment(k)).collect()
        }
        (Some(source), _) => vec![first_segment(&source.value)],
        (None, _) => Vec::new(),
    }
}

fn report_unmapped(
    path: &Path,
    entity_name: &Loc<String>,
    system: &str,
    fields: &IndexMap<String, FieldSpec>,
    written: &HashSet<&str>,
    out: &mut Vec<Diagnostic>,
) {
    for (name, field) in fields {
        if field.required && !field.read_only && !written.contains(name.as_str()) {
            out.push(
                Diagnostic::error(path, Some(entity_name.pos), Code::RequiredFieldUnmapped, format!("{system} `{}` requires `{name}` on create, and no rule writes it", entity_name.value))
                    .with_help(format!("add a rule with `target: {name}` (a `default` will do), or make the mapping one-way the other way")),
            );
        }
    }
}

fn check_reference_cycles(project: &Project, out: &mut Vec<Diagnostic>) {
    // Nodes are (flow index, mapping name); edges follow `ref`. Self-references (a contact's
    // manager is a contact) are fine: the engine waits for a later pass.
    type Key = (usize, String);
    let mut edges: IndexMap<Key, Vec<(Key, Pos)>> = IndexMap::new();
    let index_of = |flow: &FlowFile| {
        project
            .flows
            .iter()
            .position(|f| std::ptr::eq(&f.spec, flow))
            .unwrap_or(0)
    };
    for (flow_index, flow) in project.flows.iter().enumerate() {
        for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
            let key = (flow_index, mapping.name.value.clone());
            let entry = edges.entry(key.clone()).or_default();
            for rule in all_rules(&mapping.properties) {
                let Some(reference) = &rule.reference else {
                    continue;
                };
                if let Some((ref_flow, ref_mapping)) =
                    resolve_ref(project, &flow.spec, &reference.value)
                {
                    let to = (index_of(ref_flow), ref_mapping.name.value.clone());
                    if to != key {
                        entry.push((to, reference.pos));
                    }
                }
            }
        }
    }
    // Depth-first search with colours; a back edge closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour: HashMap<Key, Colour> =
        edges.keys().map(|k| (k.clone(), Colour::White)).collect();
    let mut reported: HashSet<Key> = HashSet::new();
    for start in edges.keys() {
        if colour.get(start) != Some(&Colour::White) {
            continue;
        }
        let mut stack: Vec<(Key, usize)> = vec![(start.clone(), 0)];
        let mut path: Vec<Key> = vec![start.clone()];
        colour.insert(start.clone(), Colour::Grey);
        while let Some((node, next)) = stack.last().cloned() {
            let children = edges.get(&node).map(Vec::as_slice).unwrap_or_default();
            if next >= children.len() {
                colour.insert(node.clone(), Colour::Black);
                stack.pop();
                path.pop();
                continue;
            }
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            let (child, pos) = &children[next];
            match colour.get(child).copied().unwrap_or(Colour::Black) {
                Colour::White => {
                    colour.insert(child.clone(), Colour::Grey);
                    stack.push((child.clone(), 0));
                    path.push(child.clone());
                }
                Colour::Grey if reported.insert(node.clone()) => {
                    let cycle_start = path.iter().position(|k| k == child).unwrap_or(0);
                    let names: Vec<&str> = path[cycle_start..]
                        .iter()
                        .map(|(_, n)| n.as_str())
                        .chain([child.1.as_str()])
                        .collect();
                    let flow = &project.flows[node.0];
                    out.push(
                        Diagnostic::error(&flow.path, Some(*pos), Code::RefCycle, format!("references form a cycle: {}", names.join(" -> ")))
                            .with_help("mappings run in the order of their references; break the cycle by making one reference rule one-way or removing it"),
                    );
                }
                _ => {}
            }
        }
    }
}

fn check_identity_conflicts(project: &Project, out: &mut Vec<Diagnostic>) {
    // (system, entity, field) -> (identity, mapping, flow path, position) of the first writer.
    let mut writers: HashMap<(String, String, String), (String, String)> = HashMap::new();
    for flow in &project.flows {
        for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
            for rule in mapping.properties.iter().filter_map(|r| r.valid()) {
                let mut writes: Vec<((String, String, String), Pos)> = Vec::new();
                if rule_writes(rule, mapping, true) {
                    let key = (
                        flow.spec.target.value.clone(),
                        mapping.target.value.clone(),
                        first_segment(&rule.target.value).to_owned(),
                    );
                    writes.push((key, rule.target.pos));
                }
                if rule_writes(rule, mapping, false) {
                    let pos = rule.source.as_ref().map_or(rule.target.pos, |s| s.pos);
                    for field in source_fields_written(rule) {
                        writes.push((
                            (
                                flow.spec.source.value.clone(),
                                mapping.source.value.clone(),
                                field.to_owned(),
                            ),
                            pos,
                        ));
                    }
                }
                for (key, pos) in writes {
                    let (identity, name) = (&mapping.identity.value, &mapping.name.value);
                    match writers.get(&key) {
                        Some((other_identity, other_name)) if other_identity != identity => out.push(
                            Diagnostic::error(
                                &flow.path,
                                Some(pos),
                                Code::IdentityConflict,
                                format!(
                                    "{} `{}.{}` is written as a `{identity}` here and as a `{other_identity}` by mapping `{other_name}`",
                                    key.0, key.1, key.2
                                ),
                            )
                            .with_help("one record can be only one real-world thing: use the same identity type in both mappings"),
                        ),
                        Some(_) => {}
                        None => {
                            writers.insert(key, (identity.clone(), name.clone()));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_names() {
        assert_eq!(
            split_path("addresses[type=billing].city"),
            vec!["addresses", "city"]
        );
        assert_eq!(split_path("a.b[0].c"), vec!["a", "b", "c"]);
        assert_eq!(
            first_segment("$.email_addresses[?(@.field=='EMAIL1')].email"),
            "email_addresses"
        );
        assert_eq!(first_segment("billing_address.country"), "billing_address");
    }
}
