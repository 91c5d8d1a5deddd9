//! Templates and expressions of rules (`transform`, `template`, `inverse`), compiled once in
//! one minijinja [`Environment`] with Tether's filters. (Over 1,000 lines: the filters and
//! their bounds are one table users read as a whole, with their unit tests.)
//!
//! The environment has no loader (so templates cannot reach the filesystem), treats undefined
//! values as errors (`UndefinedBehavior::Strict`) and bounds what one evaluation may do: the
//! instructions it runs (fuel), the size of what each step that can multiply text produces
//! (`replace`, `indent`, `join`, `tojson`, ...: checked before the text is built) and the size
//! of its result. A template that is a single `{{ expression }}` is compiled as an expression,
//! so its result keeps its type (a number stays a number, `none` stays null); any other
//! template renders to text.
//!
//! Every compiled template owns what it was compiled from (its own copy of the environment,
//! holding its one template), so dropping a compiled project frees its templates.
//!
//! A template sees `value` (the rule's value) and `record` (the whole record of the side it
//! reads). Only the fields of `record` that the plan's templates name are converted for each
//! record; a template that uses `record` as a whole gets all of it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use minijinja::value::{Enumerator, Kwargs, Object, Rest, StringInput, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::mapping::country;
use crate::mapping::types;

/// Instructions one evaluation may run.
pub const FUEL: u64 = 50_000;
/// The longest text a template may produce, in bytes; also the most one step of it (a filter
/// such as `replace`) may produce, and the size of a list or map it may give as its result.
pub const MAX_OUTPUT: usize = 256 * 1024;

thread_local! {
    static COMPILED: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// How many templates this thread has compiled, ever. Tests read it before and after loading
/// flows to check that each template is compiled once per load.
pub fn compiled_on_this_thread() -> usize {
    COMPILED.with(Cell::get)
}

/// Compiled templates made on this thread that are still alive, less those dropped on it.
/// Tests read it to check that dropping a compiled project frees its templates.
pub fn live_on_this_thread() -> isize {
    LIVE.with(Cell::get)
}

/// Counts one live compiled template for as long as it lives.
struct LiveToken;

impl LiveToken {
    fn new() -> LiveToken {
        COMPILED.with(|c| c.set(c.get() + 1));
        LIVE.with(|c| c.set(c.get() + 1));
        LiveToken
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        LIVE.with(|c| c.set(c.get() - 1));
    }
}

/// The filters Tether adds to minijinja's built-ins.
pub const TETHER_FILTERS: &[&str] = &[
    "coalesce",
    "parse_date",
    "format_date",
    "parse_datetime",
    "format_datetime",
    "e164",
    "to_minor_units",
    "from_minor_units",
    "lookup",
    "join_nonempty",
    "country_alpha2",
    "country_alpha3",
];

/// The names `record.<name>` in a piece of template code, by a plain scan.
fn record_fields_written(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(found) = code[from..].find("record.") {
        let start = from + found;
        let preceded = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b'.');
        let name_start = start + "record.".len();
        let name_end = code[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(code.len(), |i| name_start + i);
        if !preceded && name_end > name_start {
            out.push(code[name_start..name_end].to_string());
        }
        from = name_end.max(start + 1);
    }
    out
}

/// minijinja's built-in filters (with the `builtins` and `json` features).
const BUILTIN_FILTERS: &[&str] = &[
    "safe",
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "length",
    "count",
    "dictsort",
    "items",
    "reverse",
    "trim",
    "join",
    "split",
    "lines",
    "default",
    "d",
    "round",
    "abs",
    "int",
    "float",
    "attr",
    "first",
    "last",
    "min",
    "max",
    "sort",
    "list",
    "string",
    "bool",
    "batch",
    "slice",
    "sum",
    "indent",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "map",
    "groupby",
    "unique",
    "chain",
    "zip",
    "pprint",
    "format",
    "tojson",
    "urlencode",
    "wordcount",
    "center",
    "truncate",
];

/// minijinja's built-in tests (`x is defined`).
const BUILTIN_TESTS: &[&str] = &[
    "undefined",
    "defined",
    "none",
    "safe",
    "escaped",
    "boolean",
    "odd",
    "even",
    "divisibleby",
    "number",
    "integer",
    "int",
    "float",
    "string",
    "sequence",
    "iterable",
    "mapping",
    "startingwith",
    "endingwith",
    "lower",
    "upper",
    "sameas",
    "eq",
    "equalto",
    "ne",
    "lt",
    "lessthan",
    "le",
    "gt",
    "greaterthan",
    "ge",
    "in",
    "true",
    "false",
    "filter",
    "test",
];

/// The environment every template starts from: settings, filters and functions, no templates.
/// Each text template gets its own copy (cheap: the tables are shared) that holds only it.
static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(build_environment);

/// The name a text template has inside its own environment.
const TEMPLATE_NAME: &str = "template";

fn build_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // `none` renders as nothing in text templates, like an absent value.
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    // Built-ins whose result can be much larger than their input are checked first.
    env.add_filter("replace", bounded_replace);
    env.add_filter("indent", bounded_indent);
    env.add_filter("join", bounded_join);
    env.add_filter("tojson", bounded_tojson);
    env.add_filter("pprint", bounded_pprint);
    env.add_filter("string", bounded_string);
    env.add_filter("list", bounded_list);
    env.add_function("coalesce", coalesce);
    env.add_filter("coalesce", coalesce_filter);
    env.add_filter("parse_date", parse_date);
    env.add_filter("format_date", format_date);
    env.add_filter("parse_datetime", parse_datetime);
    env.add_filter("format_datetime", format_datetime);
    env.add_filter("e164", e164);
    env.add_filter("to_minor_units", to_minor_units);
    env.add_filter("from_minor_units", from_minor_units);
    env.add_filter("lookup", lookup);
    env.add_filter("join_nonempty", join_nonempty);
    env.add_filter("country_alpha2", country_alpha2);
    env.add_filter("country_alpha3", country_alpha3);
    env
}

/// The names a template may use besides `value` and `record`: the environment's globals
/// and functions.
pub fn global_names() -> BTreeSet<String> {
    ENVIRONMENT
        .globals()
        .map(|(name, _)| name.to_string())
        .collect()
}

/// What of `record` a template reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecordUse {
    /// Nothing.
    #[default]
    None,
    /// These top-level fields.
    Fields(BTreeSet<String>),
    /// The whole record.
    Whole,
}

impl RecordUse {
    /// Combines what two templates read.
    pub fn merge(&mut self, other: &RecordUse) {
        *self = match (std::mem::take(self), other) {
            (RecordUse::Whole, _) | (_, RecordUse::Whole) => RecordUse::Whole,
            (RecordUse::None, other) => other.clone(),
            (this, RecordUse::None) => this,
            (RecordUse::Fields(mut mine), RecordUse::Fields(theirs)) => {
                mine.extend(theirs.iter().cloned());
                RecordUse::Fields(mine)
            }
        };
    }
}

enum Body {
    Expression(minijinja::Expression<'static, 'static>),
    /// An environment of its own that holds the one template (its source is owned by it).
    Text(Box<Environment<'static>>),
}

/// Text filters that a plain `value | trim | upper` chain applies directly, with exactly the
/// results of minijinja's filters of the same names on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextFilter {
    Trim,
    Upper,
    Lower,
}

/// Recognises `value | f | g` where every filter is a [`TextFilter`] without arguments.
fn text_chain(expression: &str) -> Option<Vec<TextFilter>> {
    let mut parts = expression.split('|').map(str::trim);
    if parts.next()? != "value" {
        return None;
    }
    let chain: Vec<TextFilter> = parts
        .map(|name| match name {
            "trim" => Some(TextFilter::Trim),
            "upper" => Some(TextFilter::Upper),
            "lower" => Some(TextFilter::Lower),
            _ => None,
        })
        .collect::<Option<_>>()?;
    // An empty chain is `{{ value }}` itself: text stays the same text.
    Some(chain)
}

fn apply_chain(chain: &[TextFilter], text: &str) -> String {
    let mut out = text.to_string();
    for filter in chain {
        out = match filter {
            TextFilter::Trim => out.trim().to_string(),
            TextFilter::Upper => out.to_uppercase(),
            TextFilter::Lower => out.to_lowercase(),
        };
    }
    out
}

/// A compiled template or expression.
pub struct CompiledTemplate {
    source: String,
    body: Body,
    /// For `value | trim`-like chains: the filters, applied directly to text values.
    chain: Option<Vec<TextFilter>>,
    /// Top-level names the template reads (`value`, `record`, function names, ...).
    variables: BTreeSet<String>,
    record_use: RecordUse,
    /// Nested names read from `record` (`record.address.city` gives `address.city`).
    record_paths: BTreeSet<String>,
    _live: LiveToken,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("source", &self.source)
            .finish()
    }
}

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Syntax(String),
    #[error("unknown filter `{name}`")]
    UnknownFilter {
        name: String,
        suggestion: Option<String>,
    },
    #[error("unknown test `{name}`")]
    UnknownTest { name: String },
}

impl CompiledTemplate {
    /// Compiles a template (`{{ value | trim }}`, `{{ record.first }} {{ record.last }}`).
    pub fn compile(source: &str) -> Result<CompiledTemplate, TemplateError> {
        let trimmed = source.trim();
        let chain = single_expression(trimmed).and_then(text_chain);
        let (body, code) = match single_expression(trimmed) {
            Some(expression) => {
                let compiled = ENVIRONMENT
                    .compile_expression_owned(expression.to_string())
                    .map_err(|e| TemplateError::Syntax(error_text(&e)))?;
                (Body::Expression(compiled), vec![expression.to_string()])
            }
            None => {
                let mut own = ENVIRONMENT.clone();
                own.add_template_owned(TEMPLATE_NAME, source.to_string())
                    .map_err(|e| TemplateError::Syntax(error_text(&e)))?;
                (Body::Text(Box::new(own)), code_regions(source))
            }
        };
        let live = LiveToken::new();
        for region in &code {
            check_names(region)?;
        }
        let nested = match &body {
            Body::Expression(e) => e.undeclared_variables(true),
            Body::Text(env) => env
                .get_template(TEMPLATE_NAME)
                .map_err(|e| TemplateError::Syntax(error_text(&e)))?
                .undeclared_variables(true),
        };
        let mut variables = BTreeSet::new();
        let mut record_paths = BTreeSet::new();
        let mut record_use = RecordUse::None;
        for name in nested {
            let top = name.split('.').next().unwrap_or(&name).to_string();
            if top == "record" {
                match name.strip_prefix("record.") {
                    Some(rest) => {
                        let field = rest.split('.').next().unwrap_or(rest).to_string();
                        record_use.merge(&RecordUse::Fields(BTreeSet::from([field])));
                        record_paths.insert(rest.to_string());
                    }
                    None => record_use = RecordUse::Whole,
                }
            }
            variables.insert(top);
        }
        // The analysis above does not see attribute access inside call arguments
        // (`coalesce(record.a, record.b)`): every `record.<name>` written in the code counts.
        if !matches!(record_use, RecordUse::Whole) {
            for region in &code {
                for field in record_fields_written(region) {
                    record_use.merge(&RecordUse::Fields(BTreeSet::from([field.clone()])));
                    record_paths.insert(field);
                }
            }
        }
        Ok(CompiledTemplate {
            source: source.to_string(),
            body,
            chain,
            variables,
            record_use,
            record_paths,
            _live: live,
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Top-level variable names the template reads.
    pub fn variables(&self) -> &BTreeSet<String> {
        &self.variables
    }

    /// What of `record` the template reads.
    pub fn record_use(&self) -> &RecordUse {
        &self.record_use
    }

    /// The dotted paths read from `record` (`address.city`).
    pub fn record_paths(&self) -> &BTreeSet<String> {
        &self.record_paths
    }

    /// Why the template's cost can grow multiplicatively, if it can: a chain of `replace`
    /// steps that each lengthen the text multiplies its size at every step.
    pub fn growth(&self) -> Option<String> {
        let trimmed = self.source.trim();
        let code = match single_expression(trimmed) {
            Some(expression) => vec![expression.to_string()],
            None => code_regions(&self.source),
        };
        let growing: usize = code.iter().map(|region| growing_replaces(region)).sum();
        (growing >= 2).then(|| {
            format!(
                "the template has {growing} `replace` steps that lengthen the text: each multiplies the size the one before gave"
            )
        })
    }

    /// Evaluates the template on a JSON value, with `record` in scope.
    pub fn eval_json(
        &self,
        value: &serde_json::Value,
        record: impl FnOnce() -> Value,
    ) -> Result<serde_json::Value, EvalError> {
        if let (Some(chain), serde_json::Value::String(text)) = (&self.chain, value) {
            return Ok(serde_json::Value::String(apply_chain(chain, text)));
        }
        self.eval(to_template_value(value), record())
    }

    /// Evaluates the template with `value` and `record` in scope.
    pub fn eval(&self, value: Value, record: Value) -> Result<serde_json::Value, EvalError> {
        let scope = Value::from_object(Scope { value, record });
        match &self.body {
            Body::Expression(expression) => {
                let result = expression.eval(scope).map_err(|e| EvalError::of(&e))?;
                let mut budget = MAX_OUTPUT;
                if text_size(&result, &mut budget).is_none() {
                    return Err(EvalError::over_bound(format!(
                        "the result is longer than {MAX_OUTPUT} bytes (the limit of one template)"
                    )));
                }
                from_template_value(&result).map_err(EvalError::failed)
            }
            Body::Text(env) => {
                let text = env
                    .get_template(TEMPLATE_NAME)
                    .and_then(|template| template.render(scope))
                    .map_err(|e| EvalError::of(&e))?;
                if text.len() > MAX_OUTPUT {
                    return Err(EvalError::over_bound(format!(
                        "the result is longer than {MAX_OUTPUT} bytes (the limit of one template)"
                    )));
                }
                Ok(serde_json::Value::String(text))
            }
        }
    }
}

/// Why an evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct EvalError {
    /// The evaluation went over a bound: it ran out of fuel, or a step or the result would
    /// have been larger than [`MAX_OUTPUT`].
    pub over_bound: bool,
    /// What went wrong, for a user.
    pub reason: String,
}

impl EvalError {
    fn failed(reason: String) -> EvalError {
        EvalError {
            over_bound: false,
            reason,
        }
    }

    fn over_bound(reason: String) -> EvalError {
        EvalError {
            over_bound: true,
            reason,
        }
    }

    fn of(error: &Error) -> EvalError {
        match bound_text(error) {
            Some(reason) => EvalError::over_bound(reason),
            None => EvalError::failed(error_text(error)),
        }
    }
}

/// Marks a minijinja error as a bound that was hit (it is the error's source).
#[derive(Debug)]
struct OverBound;

impl std::fmt::Display for OverBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("over a bound of one template")
    }
}

impl std::error::Error for OverBound {}

fn over_bound(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message).with_source(OverBound)
}

/// The text of a bound that was hit, when that is why `error` happened.
fn bound_text(error: &Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(inner) = e.downcast_ref::<Error>() {
            if inner.kind() == ErrorKind::OutOfFuel {
                return Some(format!(
                    "the template ran too long (more than {FUEL} instructions, the limit of one evaluation)"
                ));
            }
            if std::error::Error::source(inner).is_some_and(|s| s.is::<OverBound>()) {
                return Some(inner.detail().unwrap_or("over a bound").to_string());
            }
        }
        current = e.source();
    }
    None
}

/// The scope of one evaluation: `value` and `record`.
#[derive(Debug)]
struct Scope {
    value: Value,
    record: Value,
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "value" => Some(self.value.clone()),
            "record" => Some(self.record.clone()),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["value", "record"])
    }
}

/// A minijinja error as one line: its description and, for syntax errors, the line.
fn error_text(error: &Error) -> String {
    let mut text = match error.detail() {
        Some(detail) => format!("{}: {detail}", kind_text(error.kind())),
        None => kind_text(error.kind()).to_string(),
    };
    if error.kind() == ErrorKind::SyntaxError
        && let Some(line) = error.line()
    {
        let _ = write!(text, " (line {line} of the template)");
    }
    if let Some(source) = std::error::Error::source(error)
        && let Some(inner) = source.downcast_ref::<Error>()
    {
        let _ = write!(text, ": {}", error_text(inner));
    }
    text
}

fn kind_text(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::SyntaxError => "syntax error",
        ErrorKind::UndefinedError => "undefined value",
        ErrorKind::UnknownFilter => "unknown filter",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::UnknownTest => "unknown test",
        ErrorKind::UnknownMethod => "unknown method",
        ErrorKind::TooManyArguments => "too many arguments",
        ErrorKind::MissingArgument => "missing argument",
        ErrorKind::OutOfFuel => "the template ran too long",
        _ => "invalid operation",
    }
}

/// The expression of a template that is exactly one `{{ ... }}` block.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|m| inner.contains(m))
    {
        return None;
    }
    let inner = inner.trim();
    (!inner.is_empty()).then_some(inner)
}

/// The code inside `{{ }}` and `{% %}` blocks of a template.
fn code_regions(source: &str) -> Vec<String> {
    let mut regions = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find(['{']) {
        let after = &rest[start..];
        let close = if after.starts_with("{{") {
            "}}"
        } else if after.starts_with("{%") {
            "%}"
        } else if after.starts_with("{#") {
            "#}"
        } else {
            rest = &rest[start + 1..];
            continue;
        };
        let Some(end) = after[2..].find(close) else {
            break;
        };
        if close != "#}" {
            regions.push(after[2..2 + end].to_string());
        }
        rest = &after[2 + end + 2..];
    }
    regions
}

/// How many `| replace(from, to)` steps in a piece of code can lengthen the text: those whose
/// `to` is longer than `from`, and those whose arguments are not both text literals.
fn growing_replaces(code: &str) -> usize {
    let mut count = 0;
    let mut from = 0;
    while let Some(found) = code[from..].find("replace") {
        let at = from + found;
        from = at + "replace".len();
        if !code[..at].trim_end().ends_with('|') {
            continue;
        }
        let rest = code[from..].trim_start();
        let Some(arguments) = rest.strip_prefix('(') else {
            continue;
        };
        let literals = string_literal(arguments).and_then(|(pattern, rest)| {
            let rest = rest.trim_start().strip_prefix(',')?;
            let (with, _) = string_literal(rest)?;
            Some((pattern, with))
        });
        match literals {
            Some((pattern, with)) if with.chars().count() <= pattern.chars().count() => {}
            _ => count += 1,
        }
    }
    count
}

/// A quoted text literal at the start of `code` (after blanks): its text and what follows.
fn string_literal(code: &str) -> Option<(String, &str)> {
    let code = code.trim_start();
    let quote = code.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut text = String::new();
    let mut chars = code[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?.1),
            c if c == quote => return Some((text, &code[1 + i + 1..])),
            c => text.push(c),
        }
    }
    None
}

/// Checks the filter and test names used in a piece of template code.
fn check_names(code: &str) -> Result<(), TemplateError> {
    let tokens = tokens(code);
    for (i, token) in tokens.iter().enumerate() {
        if *token == "|"
            && let Some(name) = tokens.get(i + 1)
            && is_identifier(name)
            && !BUILTIN_FILTERS.contains(name)
            && !TETHER_FILTERS.contains(name)
        {
            let suggestion = crate::spec::node::did_you_mean(
                name,
                BUILTIN_FILTERS.iter().chain(TETHER_FILTERS).copied(),
            )
            .map(str::to_string);
            return Err(TemplateError::UnknownFilter {
                name: name.to_string(),
                suggestion,
            });
        }
        if *token == "is" {
            let mut next = i + 1;
            if tokens.get(next) == Some(&"not") {
                next += 1;
            }
            if let Some(name) = tokens.get(next)
                && is_identifier(name)
                && !BUILTIN_TESTS.contains(name)
            {
                return Err(TemplateError::UnknownTest {
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn is_identifier(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && token.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Splits template code into identifiers and punctuation, skipping string literals.
fn tokens(code: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' || b == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
            {
                i += 1;
            }
            if let Some(token) = code.get(start..i) {
                tokens.push(token);
            }
        } else if b.is_ascii_whitespace() {
            i += 1;
        } else {
            if let Some(token) = code.get(i..i + 1) {
                tokens.push(token);
            }
            i += 1;
        }
    }
    tokens
}

/// Converts a JSON value to a template value.
pub fn to_template_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(to_template_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_template_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// Builds the `record` a template sees: the named fields (null when the record lacks them),
/// or the whole record.
pub fn record_value(record: &serde_json::Value, fields: &[Arc<str>], whole: bool) -> Value {
    if whole {
        return to_template_value(record);
    }
    let map = record.as_object();
    Value::from(
        fields
            .iter()
            .map(|name| {
                let value = map
                    .and_then(|m| m.get(&**name))
                    .map(to_template_value)
                    .unwrap_or(Value::from(()));
                (name.clone(), value)
            })
            .collect::<BTreeMap<Arc<str>, Value>>(),
    )
}

/// Converts a template result back to JSON.
pub fn from_template_value(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => serde_json::Value::Null,
        ValueKind::Bool => serde_json::Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Some(i) = value.as_i64() {
                serde_json::Value::from(i)
            } else {
                let f = f64::try_from(value.clone()).map_err(|e| error_text(&e))?;
                serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| "the result is not a finite number".to_string())?
            }
        }
        ValueKind::String => serde_json::Value::String(value.as_str().unwrap_or("").to_string()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items = value.try_iter().map_err(|e| error_text(&e))?;
            serde_json::Value::Array(
                items
                    .map(|item| from_template_value(&item))
                    .collect::<Result<_, _>>()?,
            )
        }
        ValueKind::Map => {
            let keys = value.try_iter().map_err(|e| error_text(&e))?;
            let mut map = serde_json::Map::new();
            for key in keys {
                let item = value.get_item(&key).map_err(|e| error_text(&e))?;
                let name = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => key.to_string(),
                };
                map.insert(name, from_template_value(&item)?);
            }
            serde_json::Value::Object(map)
        }
        _ => {
            return Err(format!(
                "the result is {} and not a JSON value",
                value.kind()
            ));
        }
    })
}

// ----- bounded built-ins -----

/// Fails when one step would produce more than [`MAX_OUTPUT`] bytes.
fn check_step(filter: &str, size: usize) -> Result<(), Error> {
    if size > MAX_OUTPUT {
        return Err(over_bound(format!(
            "`{filter}` would give {size} bytes, more than the {MAX_OUTPUT} bytes one template step may produce"
        )));
    }
    Ok(())
}

/// Checks that a value renders to at most [`MAX_OUTPUT`] bytes before a filter renders it.
fn check_input(filter: &str, value: &Value) -> Result<(), Error> {
    let mut budget = MAX_OUTPUT;
    if text_size(value, &mut budget).is_none() {
        return Err(over_bound(format!(
            "`{filter}` would give more than the {MAX_OUTPUT} bytes one template step may produce"
        )));
    }
    Ok(())
}

/// About how many bytes a value renders to, counting down `budget`; `None` once it is spent
/// (without rendering or walking the rest of the value).
fn text_size(value: &Value, budget: &mut usize) -> Option<usize> {
    fn take(budget: &mut usize, n: usize) -> Option<usize> {
        *budget = budget.checked_sub(n)?;
        Some(n)
    }
    match value.kind() {
        ValueKind::String => take(budget, value.as_str().map_or(0, str::len)),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            let mut total = take(budget, 2)?;
            let is_map = value.kind() == ValueKind::Map;
            for item in value.try_iter().ok()? {
                total += take(budget, 2)?;
                if is_map {
                    let entry = value.get_item(&item).ok()?;
                    total += text_size(&entry, budget)?;
                }
                total += text_size(&item, budget)?;
            }
            Some(total)
        }
        // Numbers, booleans, none and the rest render short.
        _ => take(budget, 24),
    }
}

/// `replace`, with the size of the result checked before it is built.
fn bounded_replace(
    state: &mut State,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Value, Error> {
    let text = value.as_str();
    let (pattern, with) = (from.as_str(), to.as_str());
    let size = if pattern.is_empty() {
        // An empty pattern inserts the replacement around every character.
        let slots = text.chars().count().saturating_add(1);
        text.len().saturating_add(slots.saturating_mul(with.len()))
    } else if with.len() > pattern.len() {
        let found = text.matches(pattern).count();
        text.len()
            .saturating_add(found.saturating_mul(with.len() - pattern.len()))
    } else {
        text.len()
    };
    check_step("replace", size)?;
    minijinja::filters::replace(state, value, from, to)
}

/// `indent`, with the size of the result checked before it is built.
fn bounded_indent(
    value: StringInput<'_>,
    width: Option<usize>,
    indent_first_line: Option<bool>,
    indent_blank_lines: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let lines = value.as_str().lines().count().saturating_add(1);
    let size = value
        .as_str()
        .len()
        .saturating_add(lines.saturating_mul(width.unwrap_or(4)));
    check_step("indent", size)?;
    minijinja::filters::indent(value, width, indent_first_line, indent_blank_lines, kwargs)
}

/// `join`, with the size of the parts and separators checked before they are joined.
fn bounded_join(
    state: &mut State,
    value: &Value,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let separator = joiner.as_ref().map_or(0, |j| j.as_str().len());
    let named: Option<String> = kwargs.peek("attribute").unwrap_or_default();
    let attribute_name = attribute.or(named.as_deref());
    let mut budget = MAX_OUTPUT;
    let mut over = false;
    if value.kind() != ValueKind::String {
        for item in value.try_iter()? {
            let part = match attribute_name {
                Some(name) => item.get_attr(name).unwrap_or_default(),
                None => item,
            };
            let fits = budget.checked_sub(separator).is_some_and(|left| {
                budget = left;
                text_size(&part, &mut budget).is_some()
            });
            if !fits {
                over = true;
                break;
            }
        }
    } else {
        let chars = value.as_str().map_or(0, |s| s.chars().count());
        over = value
            .as_str()
            .map_or(0, str::len)
            .saturating_add(chars.saturating_mul(separator))
            > MAX_OUTPUT;
    }
    if over {
        return Err(over_bound(format!(
            "`join` would give more than the {MAX_OUTPUT} bytes one template step may produce"
        )));
    }
    minijinja::filters::join(state, value, joiner, attribute, kwargs)
}

fn bounded_tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    check_input("tojson", value)?;
    minijinja::filters::tojson(value, indent, kwargs)
}

fn bounded_pprint(value: &Value) -> Result<String, Error> {
    check_input("pprint", value)?;
    Ok(minijinja::filters::pprint(value))
}

fn bounded_string(state: &State, value: &Value) -> Result<Value, Error> {
    check_input("string", value)?;
    minijinja::filters::string(state, value)
}

fn bounded_list(state: &State, value: Value) -> Result<Value, Error> {
    check_input("list", &value)?;
    minijinja::filters::list(state, value)
}

// ----- filters and functions -----

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

fn is_empty(value: &Value) -> bool {
    value.is_undefined() || value.is_none() || value.as_str().is_some_and(|s| s.trim().is_empty())
}

/// `coalesce(a, b, ...)`: the first argument that is neither none nor empty text.
fn coalesce(values: Rest<Value>) -> Value {
    values
        .iter()
        .find(|v| !is_empty(v))
        .cloned()
        .unwrap_or(Value::from(()))
}

/// `a | coalesce(b, ...)`: the same as `coalesce(a, b, ...)`.
fn coalesce_filter(first: Value, rest: Rest<Value>) -> Value {
    if !is_empty(&first) {
        return first;
    }
    coalesce(rest)
}

fn text_arg<'a>(value: &'a Value, filter: &str) -> Result<Option<&'a str>, Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(None);
    }
    match value.as_str() {
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => Ok(Some(s.trim())),
        None => Err(invalid(format!(
            "{filter} expects text, found {}",
            value.kind()
        ))),
    }
}

fn strftime_items(format: &str) -> Result<Vec<Item<'_>>, Error> {
    StrftimeItems::new(format)
        .parse()
        .map_err(|_| invalid(format!("`{format}` is not a valid date format")))
}

fn format_with(
    items: &[Item<'_>],
    formatted: impl FnOnce(&mut String, &[Item<'_>]) -> std::fmt::Result,
) -> Result<Value, Error> {
    let mut out = String::new();
    formatted(&mut out, items).map_err(|_| invalid("the date cannot be written in this format"))?;
    Ok(Value::from(out))
}

/// `value | parse_date("%d.%m.%Y")`: reads a date in the given format, gives `YYYY-MM-DD`.
fn parse_date(value: Value, format: &str) -> Result<Value, Error> {
    let Some(text) = text_arg(&value, "parse_date")? else {
        return Ok(Value::from(()));
    };
    strftime_items(format)?;
    NaiveDate::parse_from_str(text, format)
        .map(|d| Value::from(d.to_string()))
        .map_err(|e| {
            invalid(format!(
                "`{text}` is not a date in the format `{format}`: {e}"
            ))
        })
}

/// `value | format_date("%d.%m.%Y")`: writes a date (or the date of a date-time) in a format.
fn format_date(value: Value, format: &str) -> Result<Value, Error> {
    let Some(text) = text_arg(&value, "format_date")? else {
        return Ok(Value::from(()));
    };
    let date = types::date(&serde_json::Value::String(text.to_string())).map_err(invalid)?;
    let items = strftime_items(format)?;
    format_with(&items, |out, items| {
        write!(out, "{}", date.format_with_items(items.iter()))
    })
}

/// `value | parse_datetime("%d.%m.%Y %H:%M")`: reads a date-time in the given format (UTC when
/// it has no offset), gives RFC 3339 in UTC.
fn parse_datetime(value: Value, format: &str) -> Result<Value, Error> {
    let Some(text) = text_arg(&value, "parse_datetime")? else {
        return Ok(Value::from(()));
    };
    strftime_items(format)?;
    let instant = DateTime::parse_from_str(text, format)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(text, format).map(|n| n.and_utc()))
        .map_err(|e| {
            invalid(format!(
                "`{text}` is not a date-time in the format `{format}`: {e}"
            ))
        })?;
    Ok(Value::from(types::format_instant(&instant)))
}

/// `value | format_datetime("%Y-%m-%dT%H:%M:%S%.3f%z")`: writes an instant, in UTC, in a format.
fn format_datetime(value: Value, format: &str) -> Result<Value, Error> {
    let Some(text) = text_arg(&value, "format_datetime")? else {
        return Ok(Value::from(()));
    };
    let instant = types::datetime(&serde_json::Value::String(text.to_string())).map_err(invalid)?;
    let items = strftime_items(format)?;
    format_with(&items, |out, items| {
        write!(out, "{}", instant.format_with_items(items.iter()))
    })
}

/// `value | e164("NO")`: a phone number in E.164, national numbers read as numbers of the
/// given country (alpha-2, alpha-3 or name).
fn e164(value: Value, default_country: Option<&str>) -> Result<Value, Error> {
    let Some(text) = text_arg(&value, "e164")? else {
        return Ok(Value::from(()));
    };
    let country = match default_country {
        Some(code) => Some(
            country::find(code)
                .ok_or_else(|| invalid(format!("`{code}` is not a country code")))?,
        ),
        None => None,
    };
    match types::e164(text, country).map_err(invalid)? {
        Some(number) => Ok(Value::from(number)),
        None => Err(invalid(format!(
            "`{text}` is a national number: give the country, e164(\"NO\")"
        ))),
    }
}

fn digits_arg(digits: Option<u32>, kwargs: &Kwargs) -> Result<u32, Error> {
    let named: Option<u32> = kwargs.get("digits")?;
    kwargs.assert_all_used()?;
    let digits = digits.or(named).unwrap_or(2);
    if digits > 18 {
        return Err(invalid("digits must be between 0 and 18"));
    }
    Ok(digits)
}

fn decimal_arg(value: &Value, filter: &str) -> Result<Option<Decimal>, Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(None);
    }
    let json = match value.kind() {
        ValueKind::String => {
            let text = value.as_str().unwrap_or("").trim();
            if text.is_empty() {
                return Ok(None);
            }
            serde_json::Value::String(text.to_string())
        }
        ValueKind::Number => from_template_value(value).map_err(invalid)?,
        other => {
            return Err(invalid(format!("{filter} expects a number, found {other}")));
        }
    };
    types::decimal(&json).map(Some).map_err(invalid)
}

/// `value | to_minor_units(digits=2)`: `"12.50"` gives `1250`; exact, refuses `"12.345"`.
fn to_minor_units(value: Value, digits: Option<u32>, kwargs: Kwargs) -> Result<Value, Error> {
    let digits = digits_arg(digits, &kwargs)?;
    let Some(amount) = decimal_arg(&value, "to_minor_units")? else {
        return Ok(Value::from(()));
    };
    let factor = Decimal::from(10_i64.pow(digits));
    let minor = amount
        .checked_mul(factor)
        .ok_or_else(|| invalid("the amount is too large"))?;
    if !minor.is_integer() {
        return Err(invalid(format!(
            "{amount} has more than {digits} decimal places"
        )));
    }
    minor
        .to_i64()
        .map(Value::from)
        .ok_or_else(|| invalid("the amount is too large"))
}

/// `value | from_minor_units(digits=2)`: `1250` gives `"12.50"`.
fn from_minor_units(value: Value, digits: Option<u32>, kwargs: Kwargs) -> Result<Value, Error> {
    let digits = digits_arg(digits, &kwargs)?;
    let Some(minor) = decimal_arg(&value, "from_minor_units")? else {
        return Ok(Value::from(()));
    };
    if !minor.is_integer() {
        return Err(invalid(format!(
            "{minor} is not a whole number of minor units"
        )));
    }
    let minor = minor
        .to_i64()
        .ok_or_else(|| invalid("the amount is too large"))?;
    Ok(Value::from(
        Decimal::from_i128_with_scale(i128::from(minor), digits).to_string(),
    ))
}

/// `value | lookup({"A": "active"}, default=none)`: the table's entry for the value (keys are
/// compared as text); without a default, a value missing from the table is an error.
fn lookup(
    value: Value,
    table: Value,
    default: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let named: Option<Value> = kwargs.get("default")?;
    kwargs.assert_all_used()?;
    let default = default.or(named);
    if value.is_none() || value.is_undefined() {
        return Ok(default.unwrap_or(Value::from(())));
    }
    if table.kind() != ValueKind::Map {
        return Err(invalid("lookup expects a mapping as its table"));
    }
    let key = match value.as_str() {
        Some(s) => Value::from(s),
        None => Value::from(value.to_string()),
    };
    match table.get_item(&key) {
        Ok(found) if !found.is_undefined() => Ok(found),
        _ => default.ok_or_else(|| invalid(format!("`{value}` is not in the lookup table"))),
    }
}

/// `[a, b, c] | join_nonempty(" ")`: joins the parts that are neither none nor empty text.
fn join_nonempty(parts: Value, separator: Option<&str>) -> Result<Value, Error> {
    let separator = separator.unwrap_or("");
    let mut out = String::new();
    let mut first = true;
    for part in parts.try_iter()? {
        if is_empty(&part) {
            continue;
        }
        if !first {
            out.push_str(separator);
        }
        first = false;
        match part.as_str() {
            Some(s) => out.push_str(s.trim()),
            None => {
                let _ = write!(out, "{part}");
            }
        }
    }
    Ok(Value::from(out))
}

fn country_of(value: &Value, filter: &str) -> Result<Option<&'static country::Country>, Error> {
    let Some(text) = text_arg(value, filter)? else {
        return Ok(None);
    };
    country::find(text)
        .map(Some)
        .ok_or_else(|| invalid(format!("`{text}` is not an ISO 3166-1 country")))
}

/// `value | country_alpha2`: `NOR` or `Norway` gives `NO`.
fn country_alpha2(value: Value) -> Result<Value, Error> {
    Ok(country_of(&value, "country_alpha2")?
        .map(|c| Value::from(c.alpha2))
        .unwrap_or(Value::from(())))
}

/// `value | country_alpha3`: `NO` or `Norway` gives `NOR`.
fn country_alpha3(value: Value) -> Result<Value, Error> {
    Ok(country_of(&value, "country_alpha3")?
        .map(|c| Value::from(c.alpha3))
        .unwrap_or(Value::from(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, value: serde_json::Value) -> Result<serde_json::Value, String> {
        eval_bounded(source, value).map_err(|e| e.reason)
    }

    fn eval_bounded(
        source: &str,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, EvalError> {
        let template = CompiledTemplate::compile(source).expect("compiles");
        template.eval(to_template_value(&value), Value::from(()))
    }

    fn eval_record(source: &str, record: serde_json::Value) -> Result<serde_json::Value, String> {
        let template = CompiledTemplate::compile(source).expect("compiles");
        template
            .eval(Value::from(()), to_template_value(&record))
            .map_err(|e| e.reason)
    }

    /// `value | replace("x", "xxxxxxxxxx")`, `times` times.
    fn replace_chain(times: usize) -> String {
        let steps = vec![r#"replace("x", "xxxxxxxxxx")"#; times].join(" | ");
        format!("{{{{ value | {steps} }}}}")
    }

    #[test]
    fn a_chain_of_growing_replaces_stops_at_the_bound_of_one_step() {
        // Eight steps on 20 characters would build 2 GB; the step that would pass the bound
        // fails before building its text.
        let x20 = json!("x".repeat(20));
        for source in [replace_chain(8), format!("<{}>", replace_chain(8))] {
            let error = eval_bounded(&source, x20.clone()).unwrap_err();
            assert!(error.over_bound, "{error:?}");
            assert!(error.reason.contains("`replace` would give"), "{error}");
            assert!(error.reason.contains("262144"), "{error}");
        }
        // Within the bound the chain works as before.
        assert_eq!(
            eval(&replace_chain(2), json!("x")),
            Ok(json!("x".repeat(100)))
        );
        assert_eq!(
            eval(r#"{{ value | replace("", "-") }}"#, json!("ab")),
            Ok(json!("-a-b-"))
        );
    }

    #[test]
    fn other_steps_that_multiply_text_are_bounded() {
        for source in [
            "{{ value | indent(300000) }}",
            "{{ ([value] * 100000) | join(value) }}",
            "{{ ([value] * 100000) | join }}",
            "{{ ([value] * 100000) | tojson }}",
            "{{ ([value] * 100000) | list }}",
            "{{ ([value] * 100000) | string }}",
            "{{ ([value] * 100000) | pprint }}",
            "{{ [value] * 100000 }}",
        ] {
            let error = eval_bounded(source, json!("abc")).unwrap_err();
            assert!(error.over_bound, "{source}: {error:?}");
        }
        assert_eq!(
            eval("{{ [value, value] | join(',') }}", json!("a")),
            Ok(json!("a,a"))
        );
        assert_eq!(
            eval("{{ value | indent(2, true) }}", json!("a\nb")),
            Ok(json!("  a\n  b"))
        );
    }

    #[test]
    fn chains_of_lengthening_replaces_are_named() {
        let growth = CompiledTemplate::compile(&replace_chain(8))
            .unwrap()
            .growth()
            .expect("a chain that grows");
        assert!(growth.contains("8 `replace` steps"), "{growth}");
        for quiet in [
            replace_chain(1),
            r#"{{ value | replace("-", "") | replace('a', "b") | replace("\"", "'") }}"#
                .to_string(),
            "{{ value | upper }} replace | replace".to_string(),
        ] {
            let template = CompiledTemplate::compile(&quiet).unwrap();
            assert_eq!(template.growth(), None, "{quiet}");
        }
        let unknown = CompiledTemplate::compile(
            "{{ value | replace(record.a, record.b) }}{{ value | replace('x', 'yy') }}",
        )
        .unwrap();
        assert!(unknown.growth().is_some());
    }

    #[test]
    fn running_out_of_fuel_is_a_bound() {
        let error = eval_bounded(
            "{% for i in range(100000) %}{{ i }}{% endfor %}",
            json!(null),
        )
        .unwrap_err();
        assert!(error.over_bound, "{error:?}");
        assert!(error.reason.contains("50000 instructions"), "{error}");
        let error = eval_bounded("{{ value | e164 }}", json!("1")).unwrap_err();
        assert!(!error.over_bound, "{error:?}");
    }

    #[test]
    fn dropping_compiled_templates_frees_them() {
        let before = live_on_this_thread();
        let compiled_before = compiled_on_this_thread();
        for round in 0..200 {
            let templates: Vec<CompiledTemplate> = (0..5)
                .map(|i| {
                    CompiledTemplate::compile(&format!("{round}-{i}: {{{{ value }}}}")).unwrap()
                })
                .collect();
            assert_eq!(live_on_this_thread(), before + 5);
            assert_eq!(
                templates[4].eval(Value::from("v"), Value::from(())),
                Ok(json!(format!("{round}-4: v")))
            );
        }
        assert_eq!(live_on_this_thread(), before);
        assert_eq!(compiled_on_this_thread(), compiled_before + 1000);
    }

    #[test]
    fn single_expressions_keep_their_type() {
        assert_eq!(eval("{{ value }}", json!(12)), Ok(json!(12)));
        assert_eq!(eval("{{ value }}", json!(null)), Ok(json!(null)));
        assert_eq!(eval("{{- value | upper -}}", json!("a")), Ok(json!("A")));
        assert_eq!(eval("x{{ value }}", json!(12)), Ok(json!("x12")));
        assert_eq!(eval("{{ value }} {{ value }}", json!(null)), Ok(json!(" ")));
    }

    #[test]
    fn direct_text_chains_agree_with_minijinja() {
        for source in [
            "{{ value }}",
            "{{ value | trim }}",
            "{{ value|trim|upper }}",
            "{{ value | lower | trim }}",
        ] {
            let template = CompiledTemplate::compile(source).unwrap();
            assert!(template.chain.is_some(), "{source}");
            for text in ["  Ann Lee ", "ÅSE ø", "\u{a0}x\t", ""] {
                let direct = template
                    .eval_json(&json!(text), || Value::from(()))
                    .unwrap();
                let engine = template.eval(Value::from(text), Value::from(())).unwrap();
                assert_eq!(direct, engine, "{source} on {text:?}");
            }
        }
        let template = CompiledTemplate::compile("{{ value | trim('x') }}").unwrap();
        assert!(template.chain.is_none());
        // Numbers go through minijinja.
        let template = CompiledTemplate::compile("{{ value | upper }}").unwrap();
        assert_eq!(
            template.eval_json(&json!(5), || Value::from(())),
            Ok(json!("5"))
        );
    }

    #[test]
    fn builtin_text_filters() {
        assert_eq!(eval("{{ value | trim }}", json!("  a ")), Ok(json!("a")));
        assert_eq!(eval("{{ value | lower }}", json!("AbC")), Ok(json!("abc")));
        assert_eq!(
            eval("{{ value | title }}", json!("ann lee")),
            Ok(json!("Ann Lee"))
        );
        assert_eq!(
            eval("{{ value | split(',') | join(';') }}", json!("a,b")),
            Ok(json!("a;b"))
        );
        assert_eq!(
            eval("{{ value | default('x') }}", json!(null)),
            Ok(json!(null))
        );
        assert_eq!(
            eval_record("{{ record.missing | default('x') }}", json!({})),
            Ok(json!("x"))
        );
    }

    #[test]
    fn coalesce_takes_the_first_filled_value() {
        assert_eq!(
            eval_record(
                "{{ coalesce(record.a, record.b, 'z') }}",
                json!({"a": "", "b": null})
            ),
            Ok(json!("z"))
        );
        assert_eq!(
            eval_record(
                "{{ record.a | coalesce(record.b) }}",
                json!({"a": null, "b": "b"})
            ),
            Ok(json!("b"))
        );
        assert_eq!(
            eval_record("{{ coalesce(none) }}", json!({})),
            Ok(json!(null))
        );
    }

    #[test]
    fn date_filters() {
        assert_eq!(
            eval("{{ value | parse_date('%d.%m.%Y') }}", json!("01.05.2024")),
            Ok(json!("2024-05-01"))
        );
        assert_eq!(
            eval("{{ value | format_date('%d.%m.%Y') }}", json!("2024-05-01")),
            Ok(json!("01.05.2024"))
        );
        assert_eq!(
            eval(
                "{{ value | parse_datetime('%d.%m.%Y %H:%M') }}",
                json!("01.05.2024 14:30")
            ),
            Ok(json!("2024-05-01T14:30:00Z"))
        );
        assert_eq!(
            eval(
                "{{ value | format_datetime('%Y-%m-%dT%H:%M:%S%.3f%z') }}",
                json!("2024-05-01T14:30:00+02:00")
            ),
            Ok(json!("2024-05-01T12:30:00.000+0000"))
        );
        assert_eq!(
            eval("{{ value | parse_date('%d.%m.%Y') }}", json!(null)),
            Ok(json!(null))
        );
        let error = eval("{{ value | parse_date('%d.%m.%Y') }}", json!("2024-05-01")).unwrap_err();
        assert!(
            error.contains("`2024-05-01` is not a date in the format `%d.%m.%Y`"),
            "{error}"
        );
        assert!(
            eval("{{ value | format_date('%Q') }}", json!("2024-05-01"))
                .unwrap_err()
                .contains("not a valid date format")
        );
        assert!(
            eval("{{ value | format_date('%Y') }}", json!(5))
                .unwrap_err()
                .contains("expects text")
        );
    }

    #[test]
    fn phone_filter() {
        assert_eq!(
            eval("{{ value | e164('NO') }}", json!("22 33 44 55")),
            Ok(json!("+4722334455"))
        );
        assert_eq!(
            eval("{{ value | e164('NOR') }}", json!("+1 (555) 123-4567")),
            Ok(json!("+15551234567"))
        );
        assert!(
            eval("{{ value | e164('NO') }}", json!("phone me"))
                .unwrap_err()
                .contains("does not belong")
        );
        assert!(
            eval("{{ value | e164('XX') }}", json!("123"))
                .unwrap_err()
                .contains("not a country code")
        );
        assert!(
            eval("{{ value | e164 }}", json!("22334455"))
                .unwrap_err()
                .contains("national")
        );
    }

    #[test]
    fn minor_units_are_exact() {
        assert_eq!(
            eval("{{ value | to_minor_units }}", json!("12.50")),
            Ok(json!(1250))
        );
        assert_eq!(
            eval("{{ value | to_minor_units(digits=3) }}", json!("1.5")),
            Ok(json!(1500))
        );
        assert_eq!(
            eval("{{ value | to_minor_units(0) }}", json!(7)),
            Ok(json!(7))
        );
        let price: serde_json::Value = serde_json::from_str("19.99").unwrap();
        assert_eq!(eval("{{ value | to_minor_units }}", price), Ok(json!(1999)));
        assert!(
            eval("{{ value | to_minor_units }}", json!("12.345"))
                .unwrap_err()
                .contains("more than 2 decimal places")
        );
        assert!(eval("{{ value | to_minor_units }}", json!("ten")).is_err());
        assert_eq!(
            eval("{{ value | from_minor_units }}", json!(1250)),
            Ok(json!("12.50"))
        );
        assert_eq!(
            eval("{{ value | from_minor_units(digits=0) }}", json!("42")),
            Ok(json!("42"))
        );
        assert_eq!(
            eval("{{ value | from_minor_units }}", json!(-5)),
            Ok(json!("-0.05"))
        );
        assert!(eval("{{ value | from_minor_units }}", json!("1.5")).is_err());
        assert!(eval("{{ value | to_minor_units(digits=40) }}", json!("1")).is_err());
    }

    #[test]
    fn lookup_tables() {
        assert_eq!(
            eval("{{ value | lookup({'A': 'active'}) }}", json!("A")),
            Ok(json!("active"))
        );
        assert_eq!(
            eval("{{ value | lookup({'1': 'one'}) }}", json!(1)),
            Ok(json!("one"))
        );
        assert_eq!(
            eval("{{ value | lookup({'A': 'a'}, default='?') }}", json!("B")),
            Ok(json!("?"))
        );
        assert!(
            eval("{{ value | lookup({'A': 'a'}) }}", json!("B"))
                .unwrap_err()
                .contains("not in the lookup table")
        );
    }

    #[test]
    fn join_nonempty_skips_gaps() {
        assert_eq!(
            eval_record(
                "{{ [record.a, record.b, record.c] | join_nonempty(' ') }}",
                json!({"a": "Ann", "b": "", "c": "Lee"})
            ),
            Ok(json!("Ann Lee"))
        );
        assert_eq!(
            eval_record("{{ [none, ''] | join_nonempty(', ') }}", json!({})),
            Ok(json!(""))
        );
    }

    #[test]
    fn country_filters() {
        assert_eq!(
            eval("{{ value | country_alpha3 }}", json!("no")),
            Ok(json!("NOR"))
        );
        assert_eq!(
            eval("{{ value | country_alpha2 }}", json!("Sweden")),
            Ok(json!("SE"))
        );
        assert!(
            eval("{{ value | country_alpha2 }}", json!("Narnia"))
                .unwrap_err()
                .contains("Narnia")
        );
    }

    #[test]
    fn strictness_and_limits() {
        let error = eval_record("{{ record.nope.deeper }}", json!({})).unwrap_err();
        assert!(error.contains("undefined"), "{error}");
        let error = eval(
            "{% for i in range(100000) %}{{ i }}{% endfor %}",
            json!(null),
        )
        .unwrap_err();
        assert!(error.contains("too long"), "{error}");
        let error = eval("{{ 'x' * 1000000 }}", json!(null)).unwrap_err();
        assert!(error.contains("longer than"), "{error}");
    }

    #[test]
    fn compile_errors_name_the_problem() {
        assert!(
            matches!(CompiledTemplate::compile("{{ value | trimm }}"), Err(TemplateError::UnknownFilter { name, suggestion: Some(s) }) if name == "trimm" && s == "trim")
        );
        assert!(matches!(
            CompiledTemplate::compile("{{ value is nothing }}"),
            Err(TemplateError::UnknownTest { .. })
        ));
        assert!(matches!(
            CompiledTemplate::compile("{{ value | }}"),
            Err(TemplateError::Syntax(_))
        ));
        assert!(matches!(
            CompiledTemplate::compile("{% if %}"),
            Err(TemplateError::Syntax(_))
        ));
        // A `|` inside a string is not a filter.
        assert!(CompiledTemplate::compile("{{ 'a | b' ~ value }}").is_ok());
    }

    #[test]
    fn templates_report_what_they_read() {
        let t = CompiledTemplate::compile("{{ record.first }} {{ record.address.city | upper }}")
            .unwrap();
        assert_eq!(
            t.record_use(),
            &RecordUse::Fields(BTreeSet::from(["first".to_string(), "address".to_string()]))
        );
        assert!(t.record_paths().contains("address.city"));
        let t = CompiledTemplate::compile("{{ record | tojson }}").unwrap();
        assert_eq!(t.record_use(), &RecordUse::Whole);
        let t = CompiledTemplate::compile("{{ coalesce(valeu, 1) }}").unwrap();
        assert!(t.variables().contains("valeu"));
        assert!(global_names().contains("coalesce"));
    }
}
