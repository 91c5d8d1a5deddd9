//! Compiling mappings into [`CompiledMapping`]s: every path, template, value map, default and type of a
//! mapping is parsed and checked once, when flows load, and every problem becomes a
//! [`Diagnostic`] pointing at the offending value. (Over 1,000 lines: one compiler walks a
//! mapping's rules once, and its many small checks and their unit tests stay beside it.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::mapping::path::{PathError, RecordPath, Step};
use crate::mapping::template::{self, CompiledTemplate, RecordUse, TemplateError};
use crate::mapping::types::{self, FieldShape};
use crate::spec::diagnostic::Diagnostic;
use crate::spec::flow::{DataType, Direction, Inverse, MappingSpec, RuleSpec, ScalarKey, Side};
use crate::spec::load::Project;
use crate::spec::node::{Loc, Pos, did_you_mean};
use crate::spec::system::{EntitySpec, FieldSpec, FieldType};

/// Diagnostic codes of this module: names for entries of the one table, [`Code`].
///
/// [`Code`]: crate::spec::diagnostic::Code
pub mod codes {
    pub use crate::spec::diagnostic::Code;
    pub const UNKNOWN_FIELD: Code = Code::UnknownField;
    pub const INVALID_JSONPATH: Code = Code::InvalidJsonpath;
    pub const INVALID_TEMPLATE: Code = Code::InvalidTemplate;
    pub const UNKNOWN_VARIABLE: Code = Code::UnknownVariable;
    pub const DEFAULT_TYPE_MISMATCH: Code = Code::DefaultTypeMismatch;
    pub const VALUE_MAP_TYPE_MISMATCH: Code = Code::ValueMapTypeMismatch;
    pub const MISSING_INVERSE: Code = Code::MissingInverse;
    pub const READ_ONLY_TARGET: Code = Code::ReadOnlyTarget;
    pub const CHANGES_ONLY_TWO_WAY: Code = Code::ChangesOnlyTwoWay;
    pub const SOURCE_AND_TEMPLATE: Code = Code::SourceAndTemplate;
    pub const MISSING_SOURCE: Code = Code::MissingSource;
    pub const UNBOUNDED_COST: Code = Code::UnboundedCost;
}

/// A compiled mapping: what the engine applies to every record, both ways.
#[derive(Debug)]
pub struct CompiledMapping {
    /// The mapping's name (unique across flows).
    pub name: String,
    /// The flow the mapping belongs to.
    pub flow: String,
    /// The source system and entity.
    pub source_system: String,
    pub source_entity: String,
    /// The target system and entity.
    pub target_system: String,
    pub target_entity: String,
    /// The mapping's direction.
    pub direction: Direction,
    /// The property rules.
    pub rules: RuleSet,
    /// How records are linked the first time.
    pub match_keys: Vec<CompiledMatchKey>,
    /// Only source records for which this is true are synced.
    pub filter: Option<CompiledTemplate>,
    pub(crate) filter_needs: RecordNeeds,
}

/// Rules that apply to one record (a mapping's rules, or the item rules of an array rule),
/// with what their templates read of the record.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    pub(crate) forward_needs: RecordNeeds,
    pub(crate) inverse_needs: RecordNeeds,
}

/// The fields of a record that templates read, converted once per record.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecordNeeds {
    pub fields: Vec<Arc<str>>,
    pub whole: bool,
}

impl RecordNeeds {
    fn from_use(record_use: &RecordUse) -> RecordNeeds {
        match record_use {
            RecordUse::None => RecordNeeds::default(),
            RecordUse::Whole => RecordNeeds {
                fields: Vec::new(),
                whole: true,
            },
            RecordUse::Fields(fields) => RecordNeeds {
                fields: fields.iter().map(|f| Arc::from(f.as_str())).collect(),
                whole: false,
            },
        }
    }
}

/// Where a rule's value comes from.
#[derive(Debug)]
pub enum RuleSource {
    /// A path into the source record.
    Path(RecordPath),
    /// A template over the whole source record.
    Template(CompiledTemplate),
}

/// How a target value becomes source values again.
#[derive(Debug)]
pub enum CompiledInverse {
    /// The value is written back as it is (after undoing the value map and converting it).
    Direct,
    /// A template over `value` gives the source value.
    Template(CompiledTemplate),
    /// For template rules: one template per source path.
    PerSource(Vec<(RecordPath, CompiledTemplate)>),
    /// The rule cannot be applied backwards (it is one-way).
    None,
}

/// A compiled value map.
#[derive(Debug)]
pub struct CompiledValueMap {
    pub forward: HashMap<String, Value>,
    pub backward: Option<HashMap<String, Value>>,
}

/// What is known about the field a rule reads or writes on one side.
#[derive(Debug, Clone, Default)]
pub struct FieldInfo {
    pub field_type: Option<FieldType>,
    pub values: Option<Vec<String>>,
    pub read_only: bool,
}

impl FieldInfo {
    pub fn shape(&self) -> FieldShape<'_> {
        FieldShape {
            field_type: self.field_type,
            values: self.values.as_deref(),
        }
    }
}

/// One compiled property rule.
#[derive(Debug)]
pub struct CompiledRule {
    /// Where the rule writes in the target record; also the rule's name in errors.
    pub target: RecordPath,
    /// Where the value comes from.
    pub source: RuleSource,
    pub data_type: DataType,
    /// The rule's own direction, or the mapping's.
    pub direction: Direction,
    pub required: bool,
    /// The rule fills the field only when a record is created on the other side.
    pub create_only: bool,
    /// A one-way rule that writes only when its origin changes the field.
    pub changes_only: bool,
    /// The target value used when the source has none, in the target's representation.
    pub default: Option<Value>,
    /// For references: the mapping whose links translate the id.
    pub reference: Option<String>,
    /// For references by key: the referenced mapping's target path the target side holds.
    pub reference_key: Option<String>,
    pub transform: Option<CompiledTemplate>,
    pub inverse: CompiledInverse,
    pub value_map: Option<CompiledValueMap>,
    /// For arrays: the rules of each item.
    pub items: Option<RuleSet>,
    pub source_field: FieldInfo,
    pub target_field: FieldInfo,
}

impl CompiledRule {
    /// The source path, for messages; `None` for template rules.
    pub fn source_path(&self) -> Option<&RecordPath> {
        match &self.source {
            RuleSource::Path(path) => Some(path),
            RuleSource::Template(_) => None,
        }
    }
}

/// A compiled match key.
#[derive(Debug)]
pub struct CompiledMatchKey {
    pub source: RecordPath,
    pub target: RecordPath,
}

/// A reference rule, for the engine's dependency order and id translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceRule<'a> {
    /// The rule's target path.
    pub target: &'a str,
    /// The rule's source path.
    pub source: Option<&'a str>,
    /// The mapping whose links translate the id.
    pub mapping: &'a str,
    /// The referenced mapping's target path that stands for the record on the target side.
    pub key: Option<&'a str>,
}

impl CompiledMapping {
    /// Every reference rule, including those of array items.
    pub fn references(&self) -> Vec<ReferenceRule<'_>> {
        fn walk<'a>(set: &'a RuleSet, out: &mut Vec<ReferenceRule<'a>>) {
            for rule in &set.rules {
                if let Some(mapping) = &rule.reference {
                    out.push(ReferenceRule {
                        target: rule.target.as_str(),
                        source: rule.source_path().map(RecordPath::as_str),
                        mapping,
                        key: rule.reference_key.as_deref(),
                    });
                }
                if let Some(items) = &rule.items {
                    walk(items, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.rules, &mut out);
        out
    }
}

/// Compiles every valid mapping of every flow whose systems and entities exist. Mappings
/// with errors are not compiled; every problem found (warnings too) is returned. The compiled mappings are
/// keyed by mapping name; when a name repeats (reported by the cross-file checks), the first
/// one is kept.
pub fn compile_project(
    project: &Project,
) -> (IndexMap<String, Arc<CompiledMapping>>, Vec<Diagnostic>) {
    let mut plans = IndexMap::new();
    let mut diagnostics = Vec::new();
    for flow in &project.flows {
        for mapping in flow.spec.mappings.iter().filter_map(|m| m.valid()) {
            let Some((source, target)) = entities(project, &flow.spec, mapping) else {
                continue;
            };
            match compile(
                &flow.path,
                &flow.spec.flow,
                &flow.spec.source,
                &flow.spec.target,
                mapping,
                source,
                target,
            ) {
                Ok((plan, warnings)) => {
                    diagnostics.extend(warnings);
                    plans
                        .entry(mapping.name.value.clone())
                        .or_insert_with(|| Arc::new(plan));
                }
                Err(found) => diagnostics.extend(found),
            }
        }
    }
    (plans, diagnostics)
}

/// The source and target entities of a mapping, when both systems and entities exist.
pub fn entities<'p>(
    project: &'p Project,
    flow: &crate::spec::flow::FlowFile,
    mapping: &MappingSpec,
) -> Option<(&'p EntitySpec, &'p EntitySpec)> {
    let source = project.systems.get(&flow.source.value)?;
    let target = project.systems.get(&flow.target.value)?;
    let source = source.spec.entities.get(&mapping.source.value)?.valid()?;
    let target = target.spec.entities.get(&mapping.target.value)?.valid()?;
    Some((source, target))
}

/// Compiles one mapping against its source and target entities: the compiled mapping and its
/// warnings, or every problem found.
pub fn compile(
    file: &Path,
    flow: &str,
    source_system: &str,
    target_system: &str,
    mapping: &MappingSpec,
    source: &EntitySpec,
    target: &EntitySpec,
) -> Result<(CompiledMapping, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut compiler = Compiler {
        file,
        diagnostics: Vec::new(),
        reported_elsewhere: 0,
    };
    let rules = compiler.rule_set(
        &mapping
            .properties
            .iter()
            .filter_map(|r| r.valid())
            .collect::<Vec<_>>(),
        mapping.direction,
        &source.fields,
        &target.fields,
    );
    let mut match_keys = Vec::new();
    for key in &mapping.match_keys {
        let source_path = compiler.path(&key.source, &source.fields, Side::Source, false);
        let target_path = compiler.path(&key.target, &target.fields, Side::Target, false);
        if let (Some((source, _)), Some((target, _))) = (source_path, target_path) {
            match_keys.push(CompiledMatchKey { source, target });
        }
    }
    let mut filter_needs = RecordNeeds::default();
    let filter = mapping.filter.as_ref().and_then(|text| {
        let compiled = compiler.template(text, &source.fields, TemplateRole::Filter)?;
        filter_needs = RecordNeeds::from_use(compiled.record_use());
        Some(compiled)
    });
    compiler.diagnostics.sort_by_key(|d| (d.line, d.column));
    if compiler.error_count() > 0 {
        return Err(compiler.diagnostics);
    }
    let mapping = CompiledMapping {
        name: mapping.name.value.clone(),
        flow: flow.to_string(),
        source_system: source_system.to_string(),
        source_entity: mapping.source.value.clone(),
        target_system: target_system.to_string(),
        target_entity: mapping.target.value.clone(),
        direction: mapping.direction,
        rules,
        match_keys,
        filter,
        filter_needs,
    };
    Ok((mapping, compiler.diagnostics))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateRole {
    /// `transform` and `inverse`: `value` and `record`.
    Value,
    /// `template` rules and the mapping filter: `record` only.
    Record,
    /// The mapping filter.
    Filter,
}

/// A field list to check names against; an empty list (a system file that declares no
/// fields) checks nothing.
type Fields = IndexMap<String, FieldSpec>;

struct Compiler<'a> {
    file: &'a Path,
    diagnostics: Vec<Diagnostic>,
    /// Problems another check reports (`${VAR}` where no interpolation is allowed): the
    /// mapping is not compiled, without a second diagnostic for the same spot.
    reported_elsewhere: usize,
}

/// What resolving a path against a field list found.
enum Resolved<'f> {
    Field(FieldInfo, Option<&'f Fields>),
    Unchecked,
}

impl Compiler<'_> {
    /// Warns about a path whose cost grows with the record (a recursive descent).
    fn path_cost(&mut self, path: &RecordPath, pos: Pos) {
        if path.has_recursive_descent() {
            let mut diagnostic = Diagnostic::warning(
                self.file,
                Some(pos),
                codes::UNBOUNDED_COST,
                format!(
                    "`{path}` has a recursive descent (`..`): its cost grows with the size and depth of each record, and a record over {} nodes or {} levels fails this rule",
                    crate::mapping::path::MAX_QUERY_NODES,
                    crate::mapping::path::MAX_QUERY_DEPTH
                ),
            );
            diagnostic.help = Some(
                "name the way to the field (`$.a.b`, `$.items[*].sku`) instead of searching the whole record".into(),
            );
            self.diagnostics.push(diagnostic);
        }
    }

    fn error(&mut self, pos: Pos, code: codes::Code, message: String, help: Option<String>) {
        let mut diagnostic = Diagnostic::error(self.file, Some(pos), code, message);
        diagnostic.help = help;
        self.diagnostics.push(diagnostic);
    }

    fn rule_set(
        &mut self,
        specs: &[&RuleSpec],
        direction: Direction,
        source_fields: &Fields,
        target_fields: &Fields,
    ) -> RuleSet {
        let mut set = RuleSet::default();
        let mut forward_use = RecordUse::None;
        let mut inverse_use = RecordUse::None;
        for spec in specs {
            if let Some(rule) = self.rule(spec, direction, source_fields, target_fields) {
                if let Some(t) = &rule.transform {
                    forward_use.merge(t.record_use());
                }
                if let RuleSource::Template(t) = &rule.source {
                    forward_use.merge(t.record_use());
                }
                match &rule.inverse {
                    CompiledInverse::Template(t) => inverse_use.merge(t.record_use()),
                    CompiledInverse::PerSource(list) => {
                        for (_, t) in list {
                            inverse_use.merge(t.record_use());
                        }
                    }
                    CompiledInverse::Direct | CompiledInverse::None => {}
                }
                set.rules.push(rule);
            }
        }
        set.forward_needs = RecordNeeds::from_use(&forward_use);
        set.inverse_needs = RecordNeeds::from_use(&inverse_use);
        set
    }

    /// Parses a path and resolves it against `fields`, reporting unknown names.
    fn path<'f>(
        &mut self,
        text: &Loc<String>,
        fields: &'f Fields,
        side: Side,
        writable: bool,
    ) -> Option<(RecordPath, Resolved<'f>)> {
        let parsed = if writable {
            RecordPath::parse_writable(&text.value)
        } else {
            RecordPath::parse(&text.value)
        };
        let path = match parsed {
            Ok(path) => {
                self.path_cost(&path, text.pos);
                path
            }
            Err(PathError::ReadOnly { .. }) => {
                // Reported by the caller, which knows whether the rule must be writable.
                return None;
            }
            Err(error) => {
                self.error(text.pos, codes::INVALID_JSONPATH, error.to_string(), None);
                return None;
            }
        };
        let resolved = self.resolve(&path, fields, text.pos, side)?;
        Some((path, resolved))
    }

    fn resolve<'f>(
        &mut self,
        path: &RecordPath,
        fields: &'f Fields,
        pos: Pos,
        side: Side,
    ) -> Option<Resolved<'f>> {
        if fields.is_empty() {
            return Some(Resolved::Unchecked);
        }
        enum Token<'p> {
            Name(&'p str),
            Item,
            ItemKey(&'p str),
        }
        let names;
        let tokens: Vec<Token<'_>> = match path.steps() {
            Some(steps) => steps
                .iter()
                .flat_map(|step| match step {
                    Step::Key(k) => vec![Token::Name(k)],
                    Step::Index(_) => vec![Token::Item],
                    Step::Select { key, .. } => vec![Token::Item, Token::ItemKey(key)],
                })
                .collect(),
            None => {
                names = path.query_names();
                names
                    .iter()
                    .map(|n| match n {
                        Some(name) => Token::Name(name),
                        None => Token::Item,
                    })
                    .collect()
            }
        };
        let mut current: Option<&'f Fields> = Some(fields);
        let mut last: Option<&'f FieldSpec> = None;
        let mut in_item = false;
        for token in tokens {
            match token {
                Token::Name(name) | Token::ItemKey(name) => {
                    let Some(map) = current else {
                        return Some(Resolved::Unchecked);
                    };
                    match map.get(name) {
                        Some(spec) => {
                            if let Token::Name(_) = token {
                                last = Some(spec);
                                in_item = false;
                                current = spec.fields.as_ref();
                            }
                        }
                        None => {
                            let help = did_you_mean(name, map.keys().map(String::as_str))
                                .map(|best| format!("did you mean `{best}`?"))
                                .or_else(|| {
                                    Some(format!(
                                        "the {} entity's fields here are {}",
                                        side.as_str(),
                                        short_list(map.keys())
                                    ))
                                });
                            self.error(
                                pos,
                                codes::UNKNOWN_FIELD,
                                format!(
                                    "`{name}` is not a field of the {} entity (in `{path}`)",
                                    side.as_str()
                                ),
                                help,
                            );
                            return None;
                        }
                    }
                }
                Token::Item => in_item = true,
            }
        }
        let Some(spec) = last else {
            return Some(Resolved::Unchecked);
        };
        let info = if in_item {
            FieldInfo {
                field_type: spec
                    .items
                    .or(spec.fields.as_ref().map(|_| FieldType::Object)),
                values: None,
                read_only: spec.read_only,
            }
        } else {
            FieldInfo {
                field_type: Some(spec.field_type),
                values: spec.values.clone(),
                read_only: spec.read_only,
            }
        };
        Some(Resolved::Field(info, spec.fields.as_ref()))
    }

    fn template(
        &mut self,
        text: &Loc<String>,
        record_fields: &Fields,
        role: TemplateRole,
    ) -> Option<CompiledTemplate> {
        if text.value.contains("${") {
            self.reported_elsewhere += 1;
            return None;
        }
        // The mapping filter is an expression (`record.role == "sales"`); a template around it
        // (`{{ ... }}`) is accepted too.
        let source = if role == TemplateRole::Filter && !text.value.contains("{{") {
            format!("{{{{ {} }}}}", text.value)
        } else {
            text.value.clone()
        };
        let compiled = match CompiledTemplate::compile(&source) {
            Ok(compiled) => compiled,
            Err(TemplateError::UnknownFilter { name, suggestion }) => {
                let help = suggestion
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| {
                        Some(format!(
                            "Tether's filters are {}",
                            template::TETHER_FILTERS.join(", ")
                        ))
                    });
                self.error(
                    text.pos,
                    codes::INVALID_TEMPLATE,
                    format!("unknown filter `{name}`"),
                    help,
                );
                return None;
            }
            Err(error) => {
                self.error(
                    text.pos,
                    codes::INVALID_TEMPLATE,
                    format!("the template does not compile: {error}"),
                    None,
                );
                return None;
            }
        };
        let globals = template::global_names();
        let mut allowed: Vec<&str> = vec!["record"];
        if role == TemplateRole::Value {
            allowed.push("value");
        }
        let mut ok = true;
        for name in compiled.variables() {
            if allowed.contains(&name.as_str()) || globals.contains(name) {
                continue;
            }
            let help = did_you_mean(
                name,
                allowed
                    .iter()
                    .copied()
                    .chain(globals.iter().map(String::as_str)),
            )
            .map(|best| format!("did you mean `{best}`?"))
            .unwrap_or_else(|| match role {
                TemplateRole::Value => "a template sees `value` and `record`".to_string(),
                TemplateRole::Record | TemplateRole::Filter => {
                    "this template sees `record` (the whole record), not `value`".to_string()
                }
            });
            self.error(
                text.pos,
                codes::UNKNOWN_VARIABLE,
                format!("unknown variable `{name}`"),
                Some(help),
            );
            ok = false;
        }
        if !record_fields.is_empty() {
            for path in compiled.record_paths() {
                let field = path.split('.').next().unwrap_or(path);
                if !record_fields.contains_key(field) {
                    let help = did_you_mean(field, record_fields.keys().map(String::as_str))
                        .map(|best| format!("did you mean `{best}`?"));
                    self.error(
                        text.pos,
                        codes::UNKNOWN_FIELD,
                        format!("`record.{field}` is not a field of the record"),
                        help,
                    );
                    ok = false;
                }
            }
        }
        if ok && let Some(growth) = compiled.growth() {
            let mut diagnostic =
                Diagnostic::warning(self.file, Some(text.pos), codes::UNBOUNDED_COST, growth);
            diagnostic.help = Some(format!(
                "one step may give at most {} bytes on a record, or the rule fails for it; make one `replace` do the work, or check the chain is meant",
                template::MAX_OUTPUT
            ));
            self.diagnostics.push(diagnostic);
        }
        ok.then_some(compiled)
    }

    fn rule(
        &mut self,
        spec: &RuleSpec,
        mapping_direction: Direction,
        source_fields: &Fields,
        target_fields: &Fields,
    ) -> Option<CompiledRule> {
        let errors_before = self.error_count();
        let direction = spec
            .direction
            .as_ref()
            .map_or(mapping_direction, |d| d.value);
        let data_type = spec.data_type.value;
        if spec.changes_only && direction == Direction::Both {
            self.error(
                spec.target.pos,
                codes::CHANGES_ONLY_TWO_WAY,
                "`changes_only` applies to one-way rules; this rule flows both ways".to_owned(),
                Some("give the rule a `direction` (source-to-target or target-to-source), or drop `changes_only`".to_owned()),
            );
        }

        // Target path.
        let target = match RecordPath::parse_writable(&spec.target.value) {
            Ok(path) => Some(path),
            Err(PathError::ReadOnly { .. }) => {
                self.error(
                    spec.target.pos,
                    codes::INVALID_JSONPATH,
                    format!("the target `{}` is a query; a target must name one field", spec.target.value),
                    Some("write the target as a plain path like `billing_address.city` or `addresses[type=billing].city`".into()),
                );
                None
            }
            Err(error) => {
                self.error(
                    spec.target.pos,
                    codes::INVALID_JSONPATH,
                    error.to_string(),
                    None,
                );
                None
            }
        };
        let mut target_field = FieldInfo::default();
        let mut target_items: Option<&Fields> = None;
        if let Some(path) = &target {
            match self.resolve(path, target_fields, spec.target.pos, Side::Target) {
                Some(Resolved::Field(info, nested)) => {
                    target_field = info;
                    target_items = nested;
                }
                Some(Resolved::Unchecked) | None => {}
            }
        }
        if direction.forward() && target_field.read_only {
            self.error(
                spec.target.pos,
                codes::READ_ONLY_TARGET,
                format!(
                    "the target field `{}` is read-only in the target system",
                    spec.target.value
                ),
                Some("make the rule one-way the other way: `direction: target-to-source`".into()),
            );
        }

        // Source: a path or a template.
        let mut source_field = FieldInfo::default();
        let mut source_items: Option<&Fields> = None;
        let source = match (&spec.source, &spec.template) {
            (Some(text), None) => match RecordPath::parse(&text.value) {
                Ok(path) => {
                    self.path_cost(&path, text.pos);
                    match self.resolve(&path, source_fields, text.pos, Side::Source) {
                        Some(Resolved::Field(info, nested)) => {
                            source_field = info;
                            source_items = nested;
                        }
                        Some(Resolved::Unchecked) | None => {}
                    }
                    if direction.backward() {
                        if !path.is_writable() {
                            self.error(
                                text.pos,
                                codes::MISSING_INVERSE,
                                format!("`{}` is a JSONPath query, which can be read but not written back", text.value),
                                Some("make the rule one-way: `direction: source-to-target`, or use a plain path (`$.a.b`, `$.list[?(@.key=='value')].field`)".into()),
                            );
                        } else if source_field.read_only {
                            self.error(
                                text.pos,
                                codes::READ_ONLY_TARGET,
                                format!("the rule writes `{}` back, but it is read-only in the source system", text.value),
                                Some("make the rule one-way: `direction: source-to-target`".into()),
                            );
                        }
                    }
                    Some(RuleSource::Path(path))
                }
                Err(error) => {
                    self.error(text.pos, codes::INVALID_JSONPATH, error.to_string(), None);
                    None
                }
            },
            (None, Some(text)) => self
                .template(text, source_fields, TemplateRole::Record)
                .map(RuleSource::Template),
            (Some(_), Some(text)) => {
                self.error(
                    text.pos,
                    codes::SOURCE_AND_TEMPLATE,
                    "a rule has either `source` or `template`, not both".into(),
                    None,
                );
                None
            }
            (None, None) => {
                self.error(
                    spec.target.pos,
                    codes::MISSING_SOURCE,
                    format!(
                        "the rule for `{}` has neither `source` nor `template`",
                        spec.target.value
                    ),
                    Some("add `source: $.field` or `template: \"{{ record.field }}\"`".into()),
                );
                None
            }
        };

        // Transform and inverse.
        let transform = spec
            .transform
            .as_ref()
            .and_then(|t| self.template(t, source_fields, TemplateRole::Value));
        let inverse = self.inverse(spec, direction, &source, source_fields, target_fields);

        // Value maps.
        let value_map = self.value_map(spec, direction, &source_field, &target_field);

        // Default.
        let default = spec.default.as_ref().and_then(|default| {
            match types::coerce(data_type, default.value.clone(), target_field.shape()) {
                Ok(value) => Some(value),
                Err(reason) => {
                    self.error(
                        default.pos,
                        codes::DEFAULT_TYPE_MISMATCH,
                        format!(
                            "the default {} does not fit the rule's type {}: {reason}",
                            short(&default.value),
                            data_type.name()
                        ),
                        None,
                    );
                    None
                }
            }
        });

        // Array items.
        let items = match (data_type, &spec.items) {
            (DataType::Array, Some(items)) => {
                let items: Vec<&RuleSpec> = items.iter().filter_map(|r| r.valid()).collect();
                let empty = Fields::new();
                Some(self.rule_set(
                    &items,
                    direction,
                    source_items.unwrap_or(&empty),
                    target_items.unwrap_or(&empty),
                ))
            }
            _ => None,
        };

        if self.error_count() > errors_before {
            return None;
        }
        let source = source?;
        // A one-way rule whose value does not depend on the record it comes from (a
        // constant: `inverse: USD`, `template: "false"`) says what a record created from the
        // other side starts with, not something the two sides share: it fills the field when
        // that record is created, never over the value a linked record holds.
        let constant = |template: &CompiledTemplate| template.variables().is_empty();
        let writes_a_constant = match direction {
            Direction::TargetToSource => {
                matches!(&inverse, CompiledInverse::Template(t) if constant(t))
            }
            Direction::SourceToTarget => {
                transform.as_ref().is_some_and(constant)
                    || matches!(&source, RuleSource::Template(t) if constant(t))
            }
            Direction::Both => false,
        };
        Some(CompiledRule {
            target: target?,
            source,
            data_type,
            direction,
            required: spec.required,
            create_only: spec.create_only || writes_a_constant,
            changes_only: spec.changes_only,
            default,
            reference: spec.reference.as_ref().map(|r| r.value.clone()),
            reference_key: spec.ref_key.as_ref().map(|k| k.value.clone()),
            transform,
            inverse,
            value_map,
            items,
            source_field,
            target_field,
        })
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count() + self.reported_elsewhere
    }

    fn inverse(
        &mut self,
        spec: &RuleSpec,
        direction: Direction,
        source: &Option<RuleSource>,
        source_fields: &Fields,
        target_fields: &Fields,
    ) -> CompiledInverse {
        let one_way_help =
            "give an `inverse`, or make the rule one-way: `direction: source-to-target`";
        match (&spec.inverse, source) {
            (Some(inverse), Some(RuleSource::Template(_))) => match &inverse.value {
                Inverse::PerSource(per_source) => {
                    let mut list = Vec::new();
                    for (path_text, template_text) in per_source {
                        let path = match RecordPath::parse_writable(path_text) {
                            Ok(path) => path,
                            Err(error) => {
                                self.error(
                                    inverse.pos,
                                    codes::INVALID_JSONPATH,
                                    error.to_string(),
                                    None,
                                );
                                continue;
                            }
                        };
                        if let Some(Resolved::Field(info, _)) =
                            self.resolve(&path, source_fields, inverse.pos, Side::Source)
                            && info.read_only
                            && direction.backward()
                        {
                            self.error(
                                inverse.pos,
                                codes::READ_ONLY_TARGET,
                                format!("the inverse writes `{path_text}`, which is read-only in the source system"),
                                Some("make the rule one-way: `direction: source-to-target`".into()),
                            );
                        }
                        let located = Loc::new(template_text.clone(), inverse.pos);
                        if let Some(t) = self.template(&located, target_fields, TemplateRole::Value)
                        {
                            list.push((path, t));
                        }
                    }
                    CompiledInverse::PerSource(list)
                }
                Inverse::Template(_) => {
                    self.error(
                        inverse.pos,
                        codes::MISSING_INVERSE,
                        "a `template` rule needs an inverse per source path".into(),
                        Some("write `inverse: { $.first_name: \"{{ value | split(' ') | first }}\", ... }`".into()),
                    );
                    CompiledInverse::None
                }
            },
            (Some(inverse), Some(RuleSource::Path(_))) => match &inverse.value {
                Inverse::Template(text) => {
                    let located = Loc::new(text.clone(), inverse.pos);
                    self.template(&located, target_fields, TemplateRole::Value)
                        .map(CompiledInverse::Template)
                        .unwrap_or(CompiledInverse::None)
                }
                Inverse::PerSource(_) => {
                    self.error(
                        inverse.pos,
                        codes::MISSING_INVERSE,
                        "an inverse per source path is for `template` rules; this rule has one source".into(),
                        Some("write the inverse as one template over `value`".into()),
                    );
                    CompiledInverse::None
                }
            },
            (None, Some(RuleSource::Template(_))) => {
                if direction.backward()
                    && let Some(template) = &spec.template
                {
                    self.error(
                        template.pos,
                        codes::MISSING_INVERSE,
                        "a two-way `template` rule needs an `inverse` per source path".into(),
                        Some(one_way_help.into()),
                    );
                }
                CompiledInverse::None
            }
            (None, Some(RuleSource::Path(_))) => match &spec.transform {
                Some(transform) if direction.backward() => {
                    self.error(
                        transform.pos,
                        codes::MISSING_INVERSE,
                        "a two-way rule with a `transform` needs an `inverse`".into(),
                        Some(one_way_help.into()),
                    );
                    CompiledInverse::None
                }
                Some(_) => CompiledInverse::None,
                None => CompiledInverse::Direct,
            },
            (_, None) => CompiledInverse::None,
        }
    }

    fn value_map(
        &mut self,
        spec: &RuleSpec,
        direction: Direction,
        source_field: &FieldInfo,
        target_field: &FieldInfo,
    ) -> Option<CompiledValueMap> {
        let map = spec.value_map.as_ref()?;
        let data_type = spec.data_type.value;
        let mut forward = HashMap::with_capacity(map.value.len());
        let mut problems = Vec::new();
        for (key, value) in map.value.iter() {
            if let Err(reason) = check_key(key, source_field) {
                problems.push(format!(
                    "the key `{key}` does not fit the source field: {reason}"
                ));
            }
            match types::coerce(data_type, value.clone(), target_field.shape()) {
                Ok(coerced) => {
                    forward.insert(key.0.clone(), coerced);
                }
                Err(reason) => problems.push(format!(
                    "the value {} (for `{key}`) does not fit the rule's type {}: {reason}",
                    short(value),
                    data_type.name()
                )),
            }
        }
        let backward = match &spec.inverse_value_map {
            Some(inverse) => {
                let mut backward = HashMap::with_capacity(inverse.value.len());
                for (key, value) in inverse.value.iter() {
                    if let Err(reason) = check_key(key, target_field) {
                        problems.push(format!(
                            "the inverse key `{key}` does not fit the target field: {reason}"
                        ));
                    }
                    match types::coerce(data_type, value.clone(), source_field.shape()) {
                        Ok(coerced) => {
                            backward.insert(key.0.clone(), coerced);
                        }
                        Err(reason) => problems.push(format!(
                            "the inverse value {} (for `{key}`) does not fit the source field: {reason}",
                            short(value)
                        )),
                    }
                }
                Some(backward)
            }
            None => {
                let mut backward = HashMap::with_capacity(forward.len());
                let mut one_to_one = true;
                for (key, value) in map.value.iter() {
                    let text = scalar_text(value);
                    if backward
                        .insert(text, key_value(key, source_field))
                        .is_some()
                    {
                        one_to_one = false;
                    }
                }
                if !one_to_one && direction.backward() {
                    self.error(
                        map.pos,
                        codes::MISSING_INVERSE,
                        "the value map is not one-to-one (several keys give the same value), so it cannot be read backwards".into(),
                        Some("add `inverse_value_map`, or make the rule one-way: `direction: source-to-target`".into()),
                    );
                }
                one_to_one.then_some(backward)
            }
        };
        for problem in problems {
            self.error(
                map.pos,
                codes::VALUE_MAP_TYPE_MISMATCH,
                problem,
                target_field.values.as_ref().map(|values| {
                    format!(
                        "the target field's values are {}",
                        short_list(values.iter())
                    )
                }),
            );
        }
        Some(CompiledValueMap { forward, backward })
    }
}

/// The text a scalar is looked up by in a value map.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A value map key as a source value: typed as the source field carries it.
fn key_value(key: &ScalarKey, field: &FieldInfo) -> Value {
    match field.field_type {
        Some(FieldType::Integer | FieldType::Number) => serde_json::from_str::<Value>(&key.0)
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(key.0.clone())),
        Some(FieldType::Boolean) => match key.0.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(key.0.clone()),
        },
        _ => Value::String(key.0.clone()),
    }
}

fn check_key(key: &ScalarKey, field: &FieldInfo) -> Result<(), String> {
    let text = Value::String(key.0.clone());
    match field.field_type {
        Some(FieldType::Enum) => match &field.values {
            Some(values) if !values.contains(&key.0) => Err(format!(
                "not one of its values {}",
                short_list(values.iter())
            )),
            _ => Ok(()),
        },
        Some(FieldType::Integer) => types::integer(&text).map(drop),
        Some(FieldType::Number | FieldType::Decimal) => types::decimal(&text).map(drop),
        Some(FieldType::Boolean) => match key.0.as_str() {
            "true" | "false" => Ok(()),
            _ => Err("not true or false".into()),
        },
        _ => Ok(()),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn short_list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    let shown: Vec<String> = names.iter().take(12).map(|n| format!("`{n}`")).collect();
    let more = if names.len() > 12 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{KeepIds, accepts, apply_forward, apply_inverse};
    use crate::spec::flow::FlowFile;
    use crate::spec::load::load_text;
    use crate::spec::system::SystemFile;
    use serde_json::json;

    const SYSTEM: &str = r#"
system: SYS
title: T
base_url: http://127.0.0.1:9
auth: none
entities:
  people:
    id: $.id
    id_type: integer
    fields:
      id: { type: id, read_only: true }
      name: { type: string }
      first: { type: string }
      last: { type: string }
      kind: { type: enum, values: [a, b, c] }
      role: { type: string }
      tags: { type: array, fields: { k: { type: string }, v: { type: string } } }
    list: { path: /people, records: $.items, pagination: none }
"#;

    /// Compiles the mapping `m` with the given rules (YAML list items) between two systems
    /// with the entity above.
    fn compile_rules(rules: &str, extra: &str) -> Result<CompiledMapping, Vec<Diagnostic>> {
        compile_rules_warned(rules, extra).map(|(mapping, _)| mapping)
    }

    fn compile_rules_warned(
        rules: &str,
        extra: &str,
    ) -> Result<(CompiledMapping, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut project = Project::default();
        for name in ["src", "dst"] {
            let (loaded, diagnostics) =
                load_text::<SystemFile>(Path::new(name), SYSTEM.replace("SYS", name));
            assert!(diagnostics.is_empty(), "{diagnostics:#?}");
            project
                .systems
                .insert(name.into(), loaded.expect("system loads"));
        }
        let flow = format!(
            "flow: f\ntitle: F\nsource: src\ntarget: dst\nmappings:\n  - name: m\n    source_label: S\n    target_label: T\n    source: people\n    target: people\n    identity: person\n{extra}    properties:\n{rules}"
        );
        let (loaded, diagnostics) = load_text::<FlowFile>(Path::new("f.yaml"), flow);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let loaded = loaded.expect("flow loads");
        let mapping = loaded.spec.mappings[0]
            .valid()
            .expect("valid mapping")
            .clone();
        let (source, target) = entities(&project, &loaded.spec, &mapping).expect("entities");
        compile(
            Path::new("f.yaml"),
            "f",
            "src",
            "dst",
            &mapping,
            source,
            target,
        )
    }

    fn codes_of(result: Result<CompiledMapping, Vec<Diagnostic>>) -> Vec<(codes::Code, u32)> {
        match result {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics.iter().map(|d| (d.code, d.line)).collect(),
        }
    }

    #[test]
    fn a_clean_mapping_compiles() {
        let plan = compile_rules(
            "      - { source: $.name, target: name, type: string }\n",
            "",
        )
        .expect("compiles");
        assert_eq!(plan.rules.rules.len(), 1);
        assert_eq!(plan.source_system, "src");
    }

    #[test]
    fn costs_that_grow_with_the_record_are_warned_about() {
        let chain = [r#"replace('x', 'xxxxxxxxxx')"#; 8].join(" | ");
        let rules = format!(
            "      - {{ source: \"$..*..*..*\", target: name, type: string, direction: source-to-target }}\n      - {{ template: \"{{{{ record.first | {chain} }}}}\", target: first, type: string, direction: source-to-target }}\n      - {{ source: $.last, target: last, type: string, transform: \"{{{{ value | replace('a', 'b') }}}}\", direction: source-to-target }}\n"
        );
        let (_, warnings) = compile_rules_warned(&rules, "").expect("compiles: warnings only");
        let found: Vec<(codes::Code, u32, u32)> = warnings
            .iter()
            .map(|d| (d.code, d.line, d.column))
            .collect();
        assert_eq!(
            found,
            [
                (codes::UNBOUNDED_COST, 13, 19),
                (codes::UNBOUNDED_COST, 14, 21)
            ]
        );
        assert!(warnings.iter().all(|d| !d.is_error()));
        assert!(
            warnings[0].message.contains("recursive descent"),
            "{}",
            warnings[0].message
        );
        assert!(
            warnings[1].message.contains("8 `replace` steps"),
            "{}",
            warnings[1].message
        );
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let rules = "      - { source: $.nmae, target: name, type: string }\n      - { source: $.name, target: nmae, type: string }\n      - { source: $.kind, target: kind, type: enum, value_map: { a: x } }\n";
        assert_eq!(
            codes_of(compile_rules(rules, "")),
            [
                (codes::UNKNOWN_FIELD, 13),
                (codes::UNKNOWN_FIELD, 14),
                (codes::VALUE_MAP_TYPE_MISMATCH, 15)
            ]
        );
    }

    #[test]
    fn match_keys_and_template_fields_are_checked() {
        let extra = "    match: [{ source: $.emial, target: name }]\n";
        let rules = "      - { template: \"{{ record.nmae }}\", target: name, type: string, direction: source-to-target }\n";
        let found = codes_of(compile_rules(rules, extra));
        assert_eq!(
            found,
            [(codes::UNKNOWN_FIELD, 12), (codes::UNKNOWN_FIELD, 14)]
        );
    }

    #[test]
    fn two_way_rules_need_a_way_back() {
        // A query path, a template rule without inverse, a value map that is not one-to-one.
        let rules = "      - { source: \"$.tags[*].v\", target: name, type: string }\n      - { template: \"{{ record.first }}\", target: first, type: string }\n      - { source: $.kind, target: kind, type: enum, value_map: { a: a, b: a, c: c } }\n      - { source: $.id, target: role, type: string }\n";
        assert_eq!(
            codes_of(compile_rules(rules, "")),
            [
                (codes::MISSING_INVERSE, 13),
                (codes::MISSING_INVERSE, 14),
                (codes::MISSING_INVERSE, 15),
                (codes::READ_ONLY_TARGET, 16)
            ]
        );
        // One-way, the same rules are fine.
        let one_way = rules.replace(" }\n", ", direction: source-to-target }\n");
        assert_eq!(codes_of(compile_rules(&one_way, "")), []);
        // An inverse value map makes the map usable backwards.
        let with_inverse = "      - { source: $.kind, target: kind, type: enum, value_map: { a: a, b: a }, inverse_value_map: { a: b } }\n";
        let plan = compile_rules(with_inverse, "").expect("compiles");
        let back = apply_inverse(&plan, &json!({"kind": "a"}), &KeepIds).unwrap();
        assert_eq!(back, json!({"kind": "b"}));
    }

    #[test]
    fn templates_see_only_value_record_and_globals() {
        let rules = "      - { template: \"{{ value }}\", target: name, type: string, direction: source-to-target }\n      - { source: $.name, target: first, type: string, transform: \"{{ coalesce(value, record.last) }}\", direction: source-to-target }\n";
        assert_eq!(
            codes_of(compile_rules(rules, "")),
            [(codes::UNKNOWN_VARIABLE, 13)]
        );
    }

    #[test]
    fn a_template_rule_with_an_inverse_per_source_path_works_both_ways() {
        let rules = "      - template: \"{{ record.first }} {{ record.last }}\"\n        target: name\n        type: string\n        inverse:\n          $.first: \"{{ value | split(' ') | first }}\"\n          $.last: \"{{ value | split(' ') | last }}\"\n";
        let plan = compile_rules(rules, "").expect("compiles");
        let forward =
            apply_forward(&plan, &json!({"first": "Ann", "last": "Lee"}), &KeepIds).unwrap();
        assert_eq!(forward, json!({"name": "Ann Lee"}));
        let back = apply_inverse(&plan, &json!({"name": "Bo Berg"}), &KeepIds).unwrap();
        assert_eq!(back, json!({"first": "Bo", "last": "Berg"}));
    }

    #[test]
    fn the_mapping_filter_selects_records() {
        let extra = "    filter: \"record.role == 'sales'\"\n";
        let plan = compile_rules(
            "      - { source: $.name, target: name, type: string }\n",
            extra,
        )
        .expect("compiles");
        assert_eq!(accepts(&plan, &json!({"role": "sales"})), Ok(true));
        assert_eq!(accepts(&plan, &json!({"role": "it"})), Ok(false));
        assert_eq!(accepts(&plan, &json!({})), Ok(false));
        let bad = compile_rules(
            "      - { source: $.name, target: name, type: string }\n",
            "    filter: \"record.rol == 'x'\"\n",
        );
        assert_eq!(codes_of(bad), [(codes::UNKNOWN_FIELD, 12)]);
    }

    #[test]
    fn selector_targets_are_written_back_as_list_items() {
        let rules = "      - { source: \"$.tags[?(@.k=='x')].v\", target: name, type: string }\n";
        let plan = compile_rules(rules, "").expect("compiles");
        let forward = apply_forward(
            &plan,
            &json!({"tags": [{"k": "y", "v": 1}, {"k": "x", "v": "X"}]}),
            &KeepIds,
        )
        .unwrap();
        assert_eq!(forward, json!({"name": "X"}));
        let back = apply_inverse(&plan, &forward, &KeepIds).unwrap();
        assert_eq!(back, json!({"tags": [{"k": "x", "v": "X"}]}));
    }
}
