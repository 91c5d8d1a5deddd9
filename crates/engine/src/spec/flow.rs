//! The flow file model: `flows/<source>-to-<target>.yaml`.
//!
//! A flow is one dataflow document: a pair of systems and the mappings (entity pairs)
//! kept in sync between them. Doc comments here become the descriptions of
//! `schemas/flow.schema.json`, which editors show while a user types.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::node::{Checked, Loc};

/// A flow file: one dataflow document, kept in sync between two systems.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Tether flow file")]
pub struct FlowFile {
    /// The flow's name, the file name without `.yaml` (`keap-to-customerp`).
    pub flow: Loc<String>,
    /// The document title without its "Dataflow" suffix (`Keap to Customerp`).
    pub title: Loc<String>,
    /// What the flow is for, in a sentence or two; shown in generated documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The source system: a file `systems/<name>.yaml` next to the flows.
    pub source: Loc<String>,
    /// The target system: a file `systems/<name>.yaml` next to the flows.
    pub target: Loc<String>,
    /// How documents name the target system in the data type column ("Customerp Data
    /// Type"); defaults to the target system's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// When `tether serve` runs the flow (every 60 s when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// The entity pairs of the flow, in the document's order.
    pub mappings: Vec<Checked<MappingSpec>>,
}

/// When `tether serve` runs a flow.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// How often: `30s`, `5m`, `1h 30m`; from 1 s to 1 day.
    pub every: Loc<String>,
}

/// The shortest and longest schedule intervals.
pub const SCHEDULE_RANGE: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(24 * 60 * 60),
);

impl Schedule {
    /// The interval, or why it is not one.
    pub fn interval(&self) -> Result<std::time::Duration, String> {
        let every = humantime::parse_duration(self.every.value.trim())
            .map_err(|e| format!("`{}` is not a duration ({e})", self.every.value))?;
        let (min, max) = SCHEDULE_RANGE;
        if every < min || every > max {
            return Err(format!(
                "`{}` is outside the allowed range of 1s to 1 day",
                self.every.value
            ));
        }
        Ok(every)
    }
}

impl FlowFile {
    /// How often `tether serve` runs the flow.
    pub fn interval(&self) -> std::time::Duration {
        self.schedule
            .as_ref()
            .and_then(|s| s.interval().ok())
            .unwrap_or(DEFAULT_INTERVAL)
    }
}

/// The interval of a flow without a `schedule`.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// One section of a dataflow document: a source entity and a target entity kept in sync.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// A name unique across all flows (`companies-to-customers`); `tether map` and references use it.
    pub name: Loc<String>,
    /// How the document names the source entity ("Keap Companies").
    pub source_label: String,
    /// How the document names the target entity ("Customerp Customer").
    pub target_label: String,
    /// What this mapping means, when its name does not say it all; shown in generated documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Entity of the source system (a key of its `entities`).
    pub source: Loc<String>,
    /// Entity of the target system (a key of its `entities`).
    pub target: Loc<String>,
    /// The real-world thing both records are (`customer`, `contact`, `order`, `product`,
    /// `quote`, ...). Records of every system that are the same thing share one global id of
    /// this type, across all flows.
    pub identity: Loc<String>,
    /// Which way changes flow once records are linked.
    #[serde(default)]
    pub direction: Direction,
    /// How existing records are linked the first time, before anything is created. Values
    /// are compared normalised (case and surrounding whitespace ignored).
    #[serde(default, rename = "match")]
    pub match_keys: Vec<Loc<MatchKey>>,
    /// Who wins when the same field changed on both sides since the last sync; `manual`
    /// holds the conflict until a person decides.
    #[serde(default)]
    pub conflict: ConflictPolicy,
    /// Which side wins a `newest-wins` conflict when a side has no modification time.
    #[serde(default)]
    pub tie_breaker: Side,
    /// What happens to the counterpart when a linked record is deleted.
    #[serde(default)]
    pub deletes: DeletePolicy,
    /// When true, an empty value never overwrites a filled one.
    #[serde(default)]
    pub keep_filled: bool,
    /// Only source records for which this expression is true are synced
    /// (minijinja expression over `record`, e.g. `record.role == "sales"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Loc<String>>,
    /// A run that would delete or overwrite more than this share of the mapping's linked
    /// records stops before writing (0 to 1).
    #[serde(default = "default_max_change_share")]
    pub max_change_share: f64,
    /// The property rules: one row of the document's property table each.
    pub properties: Vec<Checked<RuleSpec>>,
}

fn default_max_change_share() -> f64 {
    0.5
}

/// A pair of paths whose values identify the same real-world thing on both sides.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchKey {
    /// JSONPath into the source record (`$.email_address`).
    pub source: Loc<String>,
    /// Path in the target record (`email`).
    pub target: Loc<String>,
}

/// One property rule: a source value, how it is turned into the target's value, and back.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// JSONPath into the source record (`$.company_name`, `$.addresses[?(@.field=='BILLING')].line1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Loc<String>>,
    /// A minijinja template computing the value from the whole source record (`record`),
    /// instead of `source`. Such a rule needs an `inverse` per source path, or is one-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Loc<String>>,
    /// Path in the target record: dot-separated names, `[n]` for a list index and
    /// `[key=value]` for the list item whose `key` is `value` (`addresses[type=billing].city`).
    pub target: Loc<String>,
    /// The target data type: the value is converted to and checked against it.
    #[serde(rename = "type")]
    pub data_type: Loc<DataType>,
    /// A minijinja template applied to the source value (`value`), with `record` in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Loc<String>>,
    /// How a target value becomes the source value again: a template over `value` (with
    /// `record`, the target record, in scope), or for a `template` rule a template per
    /// source path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse: Option<Loc<Inverse>>,
    /// A table from source values to target values (enums, statuses). Its inverse is used
    /// backwards when it is one-to-one; otherwise give `inverse_value_map`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_map: Option<Loc<IndexMap<ScalarKey, serde_json::Value>>>,
    /// A table from target values back to source values, when `value_map` is not one-to-one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse_value_map: Option<Loc<IndexMap<ScalarKey, serde_json::Value>>>,
    /// The value used when the source has none (absent or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Loc<serde_json::Value>>,
    /// When true, a record without a value for this rule is parked instead of synced.
    #[serde(default)]
    pub required: bool,
    /// Which way this rule works; defaults to the mapping's direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Loc<Direction>>,
    /// When true, the rule fills the field only when the record is created on the other side;
    /// it never overwrites the field of an existing record (defaults, fixed values, times of
    /// creation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_only: bool,
    /// For a one-way rule: write the field only when its origin changes it, and keep an edit
    /// the other side makes to it (a status the warehouse moves on) instead of asserting the
    /// origin's value again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changes_only: bool,
    /// For `type: reference`: the mapping whose links translate the id (`companies-to-customers`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<Loc<String>>,
    /// For `type: reference` where the target names the referenced record by a field instead
    /// of its id (a web shop's order line names its product by `sku`): the target path of the
    /// referenced mapping that holds that field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_key: Option<Loc<String>>,
    /// For `type: array`: the rules applied to each item (order and quote lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Checked<RuleSpec>>>,
    /// Why the rule is as it is (for one-way rules: why it cannot flow back). Shown in documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The inverse of a rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Inverse {
    /// A template over the target value (`value`) giving the source value.
    Template(String),
    /// For `template` rules: a template per source path.
    PerSource(IndexMap<String, String>),
}

/// A key of a value map: written as a string, number or boolean, compared as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[schemars(transparent)]
pub struct ScalarKey(pub String);

impl<'de> Deserialize<'de> for ScalarKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = ScalarKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

impl std::fmt::Display for ScalarKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Target data types of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// An exact decimal number (money, rates, quantities); never a float.
    Decimal,
    /// true or false.
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339, normalised to UTC.
    Datetime,
    /// An e-mail address, compared case-insensitively.
    Email,
    /// A phone number, normalised to E.164 where possible.
    Phone,
    /// An ISO 3166-1 country code; converted between alpha-2 and alpha-3 as each side's field needs.
    CountryCode,
    /// An ISO 4217 currency code.
    CurrencyCode,
    /// One of a fixed set of values, through the rule's `value_map`.
    Enum,
    /// The id of a record of another mapping, translated through that mapping's links (`ref`).
    Reference,
    /// A list of sub-records (order and quote lines) with their own rules (`items`).
    Array,
}

impl DataType {
    pub fn name(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Integer => "integer",
            DataType::Decimal => "decimal",
            DataType::Boolean => "boolean",
            DataType::Date => "date",
            DataType::Datetime => "datetime",
            DataType::Email => "email",
            DataType::Phone => "phone",
            DataType::CountryCode => "country-code",
            DataType::CurrencyCode => "currency-code",
            DataType::Enum => "enum",
            DataType::Reference => "reference",
            DataType::Array => "array",
        }
    }
}

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Both ways: an edit on either side reaches the other.
    #[default]
    Both,
    /// From the source system to the target system only.
    SourceToTarget,
    /// From the target system to the source system only.
    TargetToSource,
}

impl Direction {
    pub fn forward(self) -> bool {
        matches!(self, Direction::Both | Direction::SourceToTarget)
    }
    pub fn backward(self) -> bool {
        matches!(self, Direction::Both | Direction::TargetToSource)
    }
    /// Whether records are carried from `side` to the other.
    pub fn from(self, side: Side) -> bool {
        match side {
            Side::Source => self.forward(),
            Side::Target => self.backward(),
        }
    }
}

/// How a conflict (the same field changed on both sides) is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The side with the later modification time wins (ties and missing times: `tie_breaker`).
    #[default]
    NewestWins,
    /// The source system always wins.
    SourceWins,
    /// The target system always wins.
    TargetWins,
    /// Nobody wins: the field is left as it is on both sides and the conflict is held, with
    /// both values and the last synced one, until a person decides (`tether conflicts
    /// resolve ID --take source|target|value V`); the next run writes the choice. The
    /// record's other fields keep syncing meanwhile.
    Manual,
}

/// A side of a mapping.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Deserialize,
    Serialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    #[default]
    Source,
    Target,
}

impl Side {
    /// `source` or `target`, as flow files and messages say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }

    /// Both sides, source first.
    pub const BOTH: [Side; 2] = [Side::Source, Side::Target];

    /// The other side of the mapping.
    pub fn other(self) -> Side {
        match self {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
        }
    }
}

/// One value per side of a mapping, indexed by [`Side`]: `reads[side]` instead of a
/// `match side` in every place that picks one of two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sides<T>(pub [T; 2]);

impl<T> Sides<T> {
    /// Both values borrowed.
    pub fn as_ref(&self) -> Sides<&T> {
        Sides([&self.0[0], &self.0[1]])
    }

    /// Each value turned into another, with its side.
    pub fn map<U>(self, mut f: impl FnMut(Side, T) -> U) -> Sides<U> {
        let [source, target] = self.0;
        Sides([f(Side::Source, source), f(Side::Target, target)])
    }
}

impl<T> std::ops::Index<Side> for Sides<T> {
    type Output = T;
    fn index(&self, side: Side) -> &T {
        match side {
            Side::Source => &self.0[0],
            Side::Target => &self.0[1],
        }
    }
}

impl<T> std::ops::IndexMut<Side> for Sides<T> {
    fn index_mut(&mut self, side: Side) -> &mut T {
        match side {
            Side::Source => &mut self.0[0],
            Side::Target => &mut self.0[1],
        }
    }
}

/// What a delete of a linked record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeletePolicy {
    /// Delete the counterpart too.
    Propagate,
    /// Forget the link and keep the counterpart.
    #[default]
    Unlink,
    /// Do nothing; the link stays.
    Ignore,
}
