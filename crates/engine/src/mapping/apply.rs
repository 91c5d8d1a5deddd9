//! Applying a compiled mapping to records, both ways.
//!
//! [`apply_forward`] turns a source record into the target's fields; [`apply_inverse`] turns
//! a target record into the source's fields. Only what the rules map is produced, so the
//! result is a patch for the other side. A field missing from the record being read is left
//! out of the result (it never blanks the other side), a null is written as null, and an
//! empty string stays an empty string where the type allows it. A null skips the rule's
//! templates and value map and stays null. Every rule runs even when
//! others fail; a record with failed rules gives all of their errors at once.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::mapping::compile::{
    CompiledInverse, CompiledMapping, CompiledRule, RecordNeeds, RuleSet, RuleSource, scalar_text,
};
use crate::mapping::template::{self, CompiledTemplate, EvalError};
use crate::mapping::types;
use crate::spec::flow::DataType;

/// The most characters of an offending value an error shows.
const SHOWN_VALUE_CHARS: usize = 80;

/// A request to translate the id of a referenced record to the other side.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceRequest<'a> {
    /// The mapping whose links translate the id (the rule's `ref`).
    pub mapping: &'a str,
    /// The system the id belongs to.
    pub from_system: &'a str,
    /// The system whose id is wanted.
    pub to_system: &'a str,
    /// The id as read from the record (a string or a number); with `target_key`, on the
    /// target side, the key value.
    pub id: &'a Value,
    /// The referenced mapping's target path whose value stands for the record on the target
    /// side (the rule's `ref_key`), when the target names records by a field, not an id.
    pub target_key: Option<&'a str>,
}

/// Translates ids of referenced records through the links of another mapping. The engine
/// implements this over its link store; `None` means the referenced record is not linked
/// yet, and the record waits for a later pass.
pub trait ResolveReference {
    fn resolve(&self, request: &ReferenceRequest<'_>) -> Option<Value>;
}

impl<F> ResolveReference for F
where
    F: Fn(&ReferenceRequest<'_>) -> Option<Value>,
{
    fn resolve(&self, request: &ReferenceRequest<'_>) -> Option<Value> {
        self(request)
    }
}

/// Leaves every id as it is (for `tether map` and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepIds;

impl ResolveReference for KeepIds {
    fn resolve(&self, request: &ReferenceRequest<'_>) -> Option<Value> {
        Some(request.id.clone())
    }
}

/// Why a rule failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// A required rule has no value.
    Missing,
    /// The value does not fit the rule's type.
    Type,
    /// The value is not in the value map.
    ValueMap,
    /// A template failed.
    Template,
    /// The value cannot be written at the path.
    Write,
    /// The referenced record is not linked yet; retry in a later pass.
    ReferenceNotLinked,
    /// A path or template would go over a bound of what one rule may do on one record (the
    /// reason names the bound).
    Bound,
}

/// One rule that failed for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The mapping's name.
    pub mapping: String,
    /// The rule, named by its target path (`lines[3].sku` inside array items).
    pub rule: String,
    /// The rule's source path, when it has one.
    pub source_path: Option<String>,
    /// The offending value as JSON, cut short.
    pub value: Option<String>,
    pub kind: RuleErrorKind,
    /// What is wrong, for a user.
    pub reason: String,
    /// For [`RuleErrorKind::ReferenceNotLinked`]: the mapping whose links would translate the
    /// id (the rule's `ref`).
    pub reference: Option<String>,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mapping `{}`, rule `{}`", self.mapping, self.rule)?;
        if let Some(source) = &self.source_path {
            write!(f, " (from `{source}`)")?;
        }
        write!(f, ": {}", self.reason)?;
        if let Some(value) = &self.value {
            write!(f, " (value {value})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleError {}

/// All failed rules of one record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RecordError {
    pub errors: Vec<RuleError>,
}

impl RecordError {
    /// True when every failure is a reference that is not linked yet: the record should
    /// wait for a later pass instead of being parked.
    pub fn waits_for_references(&self) -> bool {
        !self.errors.is_empty()
            && self
                .errors
                .iter()
                .all(|e| e.kind == RuleErrorKind::ReferenceNotLinked)
    }
}

/// Maps a source record to the target's fields.
pub fn apply_forward(
    plan: &CompiledMapping,
    record: &Value,
    references: &dyn ResolveReference,
) -> Result<Value, RecordError> {
    apply_with(plan, record, references, Select::All, true)
}

/// Maps a source record to the fields an existing target record keeps in sync: every rule
/// but the `create_only` ones.
pub fn apply_forward_existing(
    plan: &CompiledMapping,
    record: &Value,
    references: &dyn ResolveReference,
) -> Result<Value, RecordError> {
    apply_with(plan, record, references, Select::Existing, true)
}

/// Maps a target record back to the source's fields.
pub fn apply_inverse(
    plan: &CompiledMapping,
    record: &Value,
    references: &dyn ResolveReference,
) -> Result<Value, RecordError> {
    apply_with(plan, record, references, Select::All, false)
}

/// Maps a target record back to source fields through the rules whose target paths are in
/// `targets` only: what the engine sends back when those fields changed on the target.
pub fn apply_inverse_selected(
    plan: &CompiledMapping,
    record: &Value,
    references: &dyn ResolveReference,
    targets: &HashSet<&str>,
) -> Result<Value, RecordError> {
    apply_with(plan, record, references, Select::Only(targets), false)
}

/// Like [`apply_inverse_selected`], for an update of `current`, the source record as it is:
/// a rule that writes into one item of a list (`$.phone_numbers[?(@.field=='PHONE2')].number`)
/// gets the whole list, the other items as they are, since updates replace a list whole
/// (objects are merged by the systems' PATCH and by the connector for a PUT).
pub fn apply_inverse_selected_onto(
    plan: &CompiledMapping,
    record: &Value,
    references: &dyn ResolveReference,
    targets: &HashSet<&str>,
    current: &Value,
) -> Result<Value, RecordError> {
    let mut out = Map::new();
    for rule in plan
        .rules
        .rules
        .iter()
        .filter(|r| r.direction.backward() && targets.contains(r.target.as_str()))
    {
        let paths: Vec<&crate::mapping::path::RecordPath> = match (&rule.inverse, &rule.source) {
            (CompiledInverse::PerSource(list), _) => list.iter().map(|(path, _)| path).collect(),
            (CompiledInverse::None, _) | (_, RuleSource::Template(_)) => Vec::new(),
            (_, RuleSource::Path(path)) => vec![path],
        };
        for path in paths {
            seed_list(&mut out, path, current);
        }
    }
    let mut run = Run {
        plan,
        references,
        errors: Vec::new(),
        select: Select::Only(targets),
    };
    let mut out = Value::Object(out);
    run.inverse_set(&plan.rules, record, &mut out, "");
    run.finish(out)
}

/// Copies the top-level field of `path` from `current` into `out` when the path steps into a
/// list item, so that writing the item keeps the list's other items.
pub fn seed_list(
    out: &mut Map<String, Value>,
    path: &crate::mapping::path::RecordPath,
    current: &Value,
) {
    use crate::mapping::path::Step;
    let Some(steps) = path.steps() else { return };
    let Some(Step::Key(key)) = steps.first() else {
        return;
    };
    let into_list = steps
        .iter()
        .any(|step| matches!(step, Step::Index(_) | Step::Select { .. }));
    if into_list
        && !out.contains_key(key)
        && let Some(value) = current.get(key).filter(|v| v.is_array())
    {
        out.insert(key.clone(), value.clone());
    }
}

/// Applies the selected rules of a plan to a record, forward or backward.
fn apply_with(
    plan: &CompiledMapping,
    record: &Value,
    references: &dyn ResolveReference,
    select: Select<'_>,
    forward: bool,
) -> Result<Value, RecordError> {
    let mut run = Run {
        plan,
        references,
        errors: Vec::new(),
        select,
    };
    let mut out = Value::Object(Map::with_capacity(plan.rules.rules.len()));
    if forward {
        run.forward_set(&plan.rules, record, &mut out, "");
    } else {
        run.inverse_set(&plan.rules, record, &mut out, "");
    }
    run.finish(out)
}

/// Whether a source record passes the mapping's `filter` (true when there is none).
pub fn accepts(plan: &CompiledMapping, record: &Value) -> Result<bool, RecordError> {
    let Some(filter) = &plan.filter else {
        return Ok(true);
    };
    let scope = template::record_value(record, &plan.filter_needs.fields, plan.filter_needs.whole);
    match filter.eval(minijinja::Value::from(()), scope) {
        Ok(value) => Ok(match value {
            Value::Bool(b) => b,
            Value::Null => false,
            Value::String(s) => !s.is_empty() && s != "false",
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }),
        Err(error) => Err(RecordError {
            errors: vec![RuleError {
                mapping: plan.name.clone(),
                rule: "filter".into(),
                source_path: None,
                value: None,
                kind: template_kind(&error),
                reason: error.reason,
                reference: None,
            }],
        }),
    }
}

/// The template view of one record, converted on first use.
struct LazyRecord<'r> {
    record: &'r Value,
    needs: &'r RecordNeeds,
    converted: Option<minijinja::Value>,
}

impl LazyRecord<'_> {
    fn get(&mut self) -> minijinja::Value {
        if let Some(value) = &self.converted {
            return value.clone();
        }
        if self.needs.fields.is_empty() && !self.needs.whole {
            return minijinja::Value::from(());
        }
        let value = template::record_value(self.record, &self.needs.fields, self.needs.whole);
        self.converted = Some(value.clone());
        value
    }
}

struct Run<'p> {
    plan: &'p CompiledMapping,
    references: &'p dyn ResolveReference,
    errors: Vec<RuleError>,
    select: Select<'p>,
}

/// Which of a plan's top-level rules a run applies.
#[derive(Clone, Copy)]
enum Select<'p> {
    All,
    /// Every rule but `create_only` ones: the fields an existing record keeps in sync.
    Existing,
    /// Only the rules with these target paths.
    Only(&'p HashSet<&'p str>),
}

impl Select<'_> {
    fn includes(self, rule: &CompiledRule, prefix: &str) -> bool {
        if !prefix.is_empty() {
            return true;
        }
        match self {
            Select::All => true,
            Select::Existing => !rule.create_only,
            Select::Only(targets) => targets.contains(rule.target.as_str()),
        }
    }
}

/// A failure inside one rule, before it is named.
struct Failure {
    kind: RuleErrorKind,
    reason: String,
    value: Option<String>,
}

impl Failure {
    fn new(kind: RuleErrorKind, reason: impl Into<String>, value: &Value) -> Failure {
        Failure {
            kind,
            reason: reason.into(),
            value: Some(show(value)),
        }
    }
}

/// A value as JSON, cut to [`SHOWN_VALUE_CHARS`] characters.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= SHOWN_VALUE_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SHOWN_VALUE_CHARS).collect();
    cut.push('…');
    cut
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn rule_name(prefix: &str, rule: &CompiledRule) -> String {
    if prefix.is_empty() {
        rule.target.as_str().to_string()
    } else {
        format!("{prefix}.{}", rule.target)
    }
}

impl Run<'_> {
    fn finish(self, out: Value) -> Result<Value, RecordError> {
        if self.errors.is_empty() {
            Ok(out)
        } else {
            Err(RecordError {
                errors: self.errors,
            })
        }
    }

    fn fail(&mut self, prefix: &str, rule: &CompiledRule, failure: Failure) {
        self.errors.push(RuleError {
            mapping: self.plan.name.clone(),
            rule: rule_name(prefix, rule),
            source_path: match &rule.source {
                RuleSource::Path(path) => Some(path.as_str().to_string()),
                RuleSource::Template(t) => Some(t.source().to_string()),
            },
            value: failure.value,
            kind: failure.kind,
            reason: failure.reason,
            reference: (failure.kind == RuleErrorKind::ReferenceNotLinked)
                .then(|| rule.reference.clone())
                .flatten(),
        });
    }

    fn forward_set(&mut self, set: &RuleSet, record: &Value, out: &mut Value, prefix: &str) {
        let mut lazy = LazyRecord {
            record,
            needs: &set.forward_needs,
            converted: None,
        };
        for rule in &set.rules {
            if !rule.direction.forward() || !self.select.includes(rule, prefix) {
                continue;
            }
            match self.forward_rule(rule, record, &mut lazy, prefix) {
                Ok(Some(value)) => {
                    if let Err(error) = rule.target.set(out, value) {
                        self.fail(
                            prefix,
                            rule,
                            Failure {
                                kind: RuleErrorKind::Write,
                                reason: error.to_string(),
                                value: None,
                            },
                        );
                    }
                }
                Ok(None) => {}
                Err(failure) => self.fail(prefix, rule, failure),
            }
        }
    }

    /// The value a rule writes into the target, or `None` when it writes nothing.
    fn forward_rule(
        &mut self,
        rule: &CompiledRule,
        record: &Value,
        lazy: &mut LazyRecord<'_>,
        prefix: &str,
    ) -> Result<Option<Value>, Failure> {
        let raw: Option<Cow<'_, Value>> = match &rule.source {
            RuleSource::Path(path) => path.try_get(record).map_err(|bound| Failure {
                kind: RuleErrorKind::Bound,
                reason: bound.to_string(),
                value: None,
            })?,
            RuleSource::Template(template) => Some(Cow::Owned(
                template
                    .eval(minijinja::Value::from(()), lazy.get())
                    .map_err(|error| Failure {
                        kind: template_kind(&error),
                        reason: error.reason,
                        value: None,
                    })?,
            )),
        };
        let value = match raw {
            None | Some(Cow::Borrowed(Value::Null)) if rule.default.is_some() => {
                return Ok(rule.default.clone());
            }
            Some(Cow::Owned(Value::Null)) if rule.default.is_some() => {
                return Ok(rule.default.clone());
            }
            None if rule.required => {
                return Err(Failure {
                    kind: RuleErrorKind::Missing,
                    reason: "required, but the record has no value".into(),
                    value: None,
                });
            }
            None => return Ok(None),
            Some(value) => value.into_owned(),
        };
        let mut value = value;
        if let Some(transform) = &rule.transform
            && !value.is_null()
        {
            value = eval_template(transform, &value, lazy)?;
        }
        if let Some(map) = &rule.value_map
            && !value.is_null()
        {
            value = match lookup(&map.forward, &value) {
                Some(mapped) => mapped.clone(),
                None => {
                    return Err(Failure::new(
                        RuleErrorKind::ValueMap,
                        "not in the value map",
                        &value,
                    ));
                }
            };
        }
        let value = match rule.data_type {
            DataType::Reference => self.reference(rule, value, true)?,
            DataType::Array if rule.items.is_some() => self.items(rule, value, prefix, true)?,
            data_type => match types::coerce(data_type, value.clone(), rule.target_field.shape()) {
                Ok(converted) => converted,
                Err(reason) => return Err(Failure::new(RuleErrorKind::Type, reason, &value)),
            },
        };
        if rule.required && is_empty(&value) {
            return Err(Failure::new(
                RuleErrorKind::Missing,
                "required, but the value is empty",
                &value,
            ));
        }
        Ok(Some(value))
    }

    fn reference(
        &mut self,
        rule: &CompiledRule,
        value: Value,
        forward: bool,
    ) -> Result<Value, Failure> {
        let id = types::coerce(DataType::Reference, value.clone(), Default::default())
            .map_err(|reason| Failure::new(RuleErrorKind::Type, reason, &value))?;
        if id.is_null() {
            return Ok(id);
        }
        let mapping = rule.reference.as_deref().unwrap_or("");
        let (from_system, to_system) = if forward {
            (&self.plan.source_system, &self.plan.target_system)
        } else {
            (&self.plan.target_system, &self.plan.source_system)
        };
        let request = ReferenceRequest {
            mapping,
            from_system,
            to_system,
            id: &id,
            target_key: rule.reference_key.as_deref(),
        };
        self.references.resolve(&request).ok_or_else(|| {
            Failure::new(
                RuleErrorKind::ReferenceNotLinked,
                format!("the referenced record is not linked through `{mapping}` yet"),
                &id,
            )
        })
    }

    fn items(
        &mut self,
        rule: &CompiledRule,
        value: Value,
        prefix: &str,
        forward: bool,
    ) -> Result<Value, Failure> {
        let Some(items) = &rule.items else {
            return Ok(value);
        };
        let list = match types::list_from_text(value) {
            Value::Null => return Ok(Value::Null),
            Value::Array(list) => list,
            other => {
                return Err(Failure::new(
                    RuleErrorKind::Type,
                    format!(
                        "expected a list, found {}",
                        crate::mapping::path::kind_name(&other)
                    ),
                    &other,
                ));
            }
        };
        let mut out = Vec::with_capacity(list.len());
        let errors_before = self.errors.len();
        let base = rule_name(prefix, rule);
        for (index, item) in list.iter().enumerate() {
            let item_prefix = format!("{base}[{index}]");
            let mut mapped = Value::Object(Map::with_capacity(items.rules.len()));
            if forward {
                self.forward_set(items, item, &mut mapped, &item_prefix);
            } else {
                self.inverse_set(items, item, &mut mapped, &item_prefix);
            }
            out.push(mapped);
        }
        if self.errors.len() > errors_before {
            // The item errors are already recorded; the list itself is not written. A list
            // whose items only wait for referenced records waits too (the record is retried
            // once they are linked), rather than failing.
            let waiting = self.errors[errors_before..]
                .iter()
                .all(|e| e.kind == RuleErrorKind::ReferenceNotLinked);
            return Err(Failure {
                kind: if waiting {
                    RuleErrorKind::ReferenceNotLinked
                } else {
                    RuleErrorKind::Type
                },
                reason: format!("{} item rule(s) failed", self.errors.len() - errors_before),
                value: None,
            });
        }
        Ok(Value::Array(out))
    }

    fn inverse_set(&mut self, set: &RuleSet, record: &Value, out: &mut Value, prefix: &str) {
        let mut lazy = LazyRecord {
            record,
            needs: &set.inverse_needs,
            converted: None,
        };
        for rule in &set.rules {
            if !rule.direction.backward()
                || matches!(rule.inverse, CompiledInverse::None)
                || !self.select.includes(rule, prefix)
            {
                continue;
            }
            if let Err(failure) = self.inverse_rule(rule, record, &mut lazy, out, prefix) {
                self.fail(prefix, rule, failure);
            }
        }
    }

    fn inverse_rule(
        &mut self,
        rule: &CompiledRule,
        record: &Value,
        lazy: &mut LazyRecord<'_>,
        out: &mut Value,
        prefix: &str,
    ) -> Result<(), Failure> {
        let mut value = match rule.target.get(record) {
            Some(value) => value.into_owned(),
            None if rule.required => {
                return Err(Failure {
                    kind: RuleErrorKind::Missing,
                    reason: "required, but the record has no value".into(),
                    value: None,
                });
            }
            None => return Ok(()),
        };
        if let Some(map) = &rule.value_map
            && !value.is_null()
        {
            let found = map
                .backward
                .as_ref()
                .and_then(|backward| lookup(backward, &value));
            value = match found {
                Some(mapped) => mapped.clone(),
                None => {
                    return Err(Failure::new(
                        RuleErrorKind::ValueMap,
                        "not in the value map (read backwards)",
                        &value,
                    ));
                }
            };
        }
        let value = match &rule.inverse {
            CompiledInverse::Direct | CompiledInverse::None => value,
            CompiledInverse::Template(_) if value.is_null() => value,
            CompiledInverse::Template(inverse) => eval_template(inverse, &value, lazy)?,
            CompiledInverse::PerSource(list) => {
                for (path, inverse) in list {
                    let source_value = if value.is_null() {
                        Value::Null
                    } else {
                        eval_template(inverse, &value, lazy)?
                    };
                    path.set(out, source_value).map_err(|error| Failure {
                        kind: RuleErrorKind::Write,
                        reason: error.to_string(),
                        value: None,
                    })?;
                }
                return Ok(());
            }
        };
        // An inverse template writes the source's own terms (a decimal for a price in cents):
        // its output is checked against the source field's type, not the rule's.
        let data_type = match (&rule.inverse, rule.source_field.field_type) {
            (CompiledInverse::Template(_), Some(field_type)) => types::data_type_of(field_type),
            (CompiledInverse::Template(_), None) => None,
            // An instant written back into a date field is written as its date, the value the
            // field holds.
            (_, Some(crate::spec::system::FieldType::Date))
                if rule.data_type == DataType::Datetime =>
            {
                Some(DataType::Date)
            }
            _ => Some(rule.data_type),
        };
        let value = match data_type {
            Some(DataType::Reference) => self.reference(rule, value, false)?,
            Some(DataType::Array) if rule.items.is_some() => {
                self.items(rule, value, prefix, false)?
            }
            Some(data_type) => {
                types::coerce(data_type, value.clone(), rule.source_field.shape())
                    .map_err(|reason| Failure::new(RuleErrorKind::Type, reason, &value))?
            }
            None => value,
        };
        if rule.required && is_empty(&value) {
            return Err(Failure::new(
                RuleErrorKind::Missing,
                "required, but the value is empty",
                &value,
            ));
        }
        let RuleSource::Path(path) = &rule.source else {
            return Ok(());
        };
        path.set(out, value).map_err(|error| Failure {
            kind: RuleErrorKind::Write,
            reason: error.to_string(),
            value: None,
        })
    }
}

/// Looks a scalar up in a value map by its text, without copying text values.
fn lookup<'m>(map: &'m HashMap<String, Value>, value: &Value) -> Option<&'m Value> {
    match value {
        Value::String(text) => map.get(text.as_str()),
        other => map.get(&scalar_text(other)),
    }
}

fn eval_template(
    template: &CompiledTemplate,
    value: &Value,
    lazy: &mut LazyRecord<'_>,
) -> Result<Value, Failure> {
    template
        .eval_json(value, || lazy.get())
        .map_err(|error| Failure::new(template_kind(&error), error.reason, value))
}

/// A template that went over a bound fails as [`RuleErrorKind::Bound`].
fn template_kind(error: &EvalError) -> RuleErrorKind {
    if error.over_bound {
        RuleErrorKind::Bound
    } else {
        RuleErrorKind::Template
    }
}
