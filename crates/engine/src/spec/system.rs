//! The system file model: `flows/systems/<system>.yaml`.
//!
//! A system file describes one HTTP API completely enough for the generic connector to talk
//! to it: base URL, authentication, politeness, and per entity its endpoints, record paths,
//! fields, pagination, incremental reads, deletes and batch writes. A new REST system needs
//! a YAML file, not code. Doc comments become `schemas/system.schema.json`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::env::EnvString;
use crate::spec::node::{Checked, Loc};

/// A system file: one external application with an HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Tether system file")]
pub struct SystemFile {
    /// The system's name, the file name without `.yaml` (`keap`).
    pub system: Loc<String>,
    /// How documents name the system ("Keap", "Customerp").
    pub title: String,
    /// Base URL every endpoint path is appended to. `${VAR}` and `${VAR:-default}` are read
    /// from the environment.
    pub base_url: Loc<EnvString>,
    /// How requests are authenticated.
    pub auth: Loc<Auth>,
    /// Request budget shared by every flow that uses this system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The daily request allowance the system's answers report (Salesforce's
    /// `Sforce-Limit-Info`, Keap's `x-keap-product-quota-*`): the connector reads it on
    /// every answer and stops the system's work for the run before the reserve is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<AllowanceSpec>,
    /// Timeouts, retries and size limits.
    #[serde(default)]
    pub http: HttpSettings,
    /// Where an error response keeps its message, code and field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorFormat>,
    /// Change notifications the system sends to `tether serve` (`POST /hooks/<system>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Webhooks>,
    /// Where the system shows the clock that stamps its modified and deletion times. Left
    /// out, a read by modified time moves its cursor only to the newest change it found, so
    /// after a quiet spell every read asks again for the lookback window before that change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<SystemClock>,
    /// The record types of the system, by name (`customers`, `Contact`).
    pub entities: IndexMap<String, Checked<EntitySpec>>,
}

/// Where a system shows its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemClock {
    /// The `Date` header of its answers comes from the same clock as its modified and
    /// deletion times. A complete read by modified time (or of tombstones) then moves its
    /// cursor to the `Date` of its first page even when it found nothing newer, and the next
    /// read asks from that time minus the lookback. Do not use it when something in front
    /// of the API (a proxy, a cache) may set the header from another clock.
    DateHeader,
}

/// Change notifications a system pushes: each one triggers an incremental run of the
/// mappings that read the entity it names, instead of waiting for the schedule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// How notifications are shaped and verified.
    pub style: WebhookStyle,
    /// The shared secret: for `keap`, the `token` query parameter of the hook URL you
    /// subscribe (`.../hooks/keap?token=...`); for `signed`, the HMAC-SHA256 key.
    pub secret: Loc<EnvString>,
    /// `keap`: the object type of an event key (`contact` in `contact.edit`) -> the entity of
    /// this system it changes.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub objects: IndexMap<String, Loc<String>>,
}

/// The shape and verification of change notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStyle {
    /// Keap REST hooks: the subscription handshake (`X-Hook-Secret` echoed back) and event
    /// bodies `{"event_key": "contact.edit", "object_keys": [{"id": 1}]}`. Keap does not sign
    /// events, so the hook URL carries the secret as `?token=`.
    Keap,
    /// A generic notification `{"entity": "customers", "ids": ["42"]}`, signed:
    /// `X-Tether-Timestamp: <unix seconds>` and `X-Tether-Signature: sha256=<hex HMAC-SHA256 of
    /// "<timestamp>.<body>">`; older than 5 minutes is refused.
    Signed,
}

/// Authentication. Credentials come from the environment (`${KEAP_API_KEY}`) and are sent
/// only to the origin of the base URL or the token endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// No authentication.
    None,
    /// `Authorization: Bearer <token>` with a fixed token.
    Bearer {
        /// The token.
        token: Loc<EnvString>,
    },
    /// A fixed key in a header (`X-Api-Key: <key>`).
    ApiKey {
        /// The header name.
        header: String,
        /// The key.
        key: Loc<EnvString>,
    },
    /// OAuth 2.0 client credentials grant: the token is fetched from `token_url`, cached, and
    /// fetched again when it expires or a request answers 401.
    Oauth2ClientCredentials {
        /// Token endpoint; a path is taken relative to the base URL.
        token_url: Loc<EnvString>,
        /// Client id.
        client_id: Loc<EnvString>,
        /// Client secret.
        client_secret: Loc<EnvString>,
        /// Requested scope, if the API wants one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// Salesforce's OAuth 2.0 token endpoint (client credentials). Its response carries the
    /// org's `instance_url`; requests go to that URL followed by `api_path`. The base URL is
    /// the login host.
    Salesforce {
        /// Token endpoint, relative to the base URL (`/services/oauth2/token`).
        token_path: String,
        /// API prefix on the instance URL (`/services/data/v60.0`).
        api_path: String,
        /// Connected app consumer key.
        client_id: Loc<EnvString>,
        /// Connected app consumer secret.
        client_secret: Loc<EnvString>,
    },
}

/// A request budget (token bucket).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period of `requests`.
    pub per: RatePeriod,
    /// Requests that may go at once after a quiet spell. Defaults to 1: requests are paced
    /// evenly at a little under `requests` per `per`, which no window of the API, fixed or
    /// sliding, counts as over the limit. A burst of `b` can put `b` more requests into one
    /// `per` than the pace alone, so set it only when the API allows that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Response headers that say how many requests remain (Keap's throttle headers); the
    /// connector slows down when they run low.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remaining_headers: Vec<String>,
}

/// Where a system's answers report its daily request allowance, and how much of it to
/// leave to the account's other integrations. Either `usage_header` or both
/// `limit_header` and `used_header`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowanceSpec {
    /// A header carrying `used/allowed`, possibly after a name and `=` and among other
    /// `;`-separated items (Salesforce: `Sforce-Limit-Info: api-usage=18/15000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_header: Option<String>,
    /// The item of `usage_header` to read when it carries several (`api-usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_item: Option<String>,
    /// A header carrying the allowance (Keap: `x-keap-product-quota-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_header: Option<String>,
    /// A header carrying what is used of it (Keap: `x-keap-product-quota-used`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_header: Option<String>,
    /// The share of the allowance left to others, from 0 to below 1 (default `0.2`: stop
    /// this system's work for the run once 80% of the allowance is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<Loc<f64>>,
}

/// The reserve of an allowance when the system file does not say.
pub const DEFAULT_ALLOWANCE_RESERVE: f64 = 0.2;

impl AllowanceSpec {
    /// The share to leave to others, or why the file's value is not one.
    pub fn reserve(&self) -> Result<f64, String> {
        let Some(reserve) = &self.reserve else {
            return Ok(DEFAULT_ALLOWANCE_RESERVE);
        };
        let value = reserve.value;
        if value.is_finite() && (0.0..1.0).contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "`allowance.reserve` is {value}; it is a share from 0 to below 1 (0.2 leaves a fifth of the allowance to others)"
            ))
        }
    }

    /// Whether the headers say where the allowance is: a usage header, or a limit and a
    /// used header.
    pub fn complete(&self) -> bool {
        self.usage_header.is_some() || (self.limit_header.is_some() && self.used_header.is_some())
    }
}

/// A time unit for rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
    Day,
}

/// Timeouts, retries and limits for requests to one system.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Seconds a request may take, body included, before it is abandoned and retried;
    /// fractions are allowed (`0.5`).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Retries of a request that failed with 429, 5xx, a timeout or a connection error.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Milliseconds before the first retry; each further retry waits about twice as long
    /// (with random jitter, at most a minute). A `Retry-After` header overrides it.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
    /// The largest response body accepted, in bytes.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: u64,
    /// Seconds this system may keep one run waiting, in total, for the rate limits it
    /// reports (429 answers, `Retry-After`, Salesforce's concurrency limit). A wait the
    /// API asks for is honoured while it fits in what remains; one that does not stops
    /// the system's requests for the rest of the run with an error that says so, and the
    /// next run starts with the whole budget again. The pace set by `rate_limit` and the
    /// slowdown on low throttle headers do not count.
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: f64,
    /// Requests in flight to this system at most (1 to 64): reads of independent records,
    /// creates and updates go out side by side up to this many, each still waiting for its
    /// turn under `rate_limit`, which stays the one gate of the request rate. With answers
    /// 100 to 300 ms away, one request at a time reaches only 3 to 10 requests a second.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout_seconds: default_timeout(),
            max_retries: default_retries(),
            retry_delay_ms: default_retry_delay(),
            max_response_bytes: default_max_response(),
            max_wait_seconds: default_max_wait(),
            concurrency: default_concurrency(),
        }
    }
}

fn default_timeout() -> f64 {
    30.0
}
fn default_retries() -> u32 {
    5
}
fn default_retry_delay() -> u64 {
    500
}
fn default_max_response() -> u64 {
    32 * 1024 * 1024
}
fn default_max_wait() -> f64 {
    120.0
}
fn default_concurrency() -> u32 {
    4
}

/// The most requests in flight a system file may ask for.
pub const MAX_CONCURRENCY: u32 = 64;

/// JSONPaths into an error response body.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorFormat {
    /// The human-readable message (`$.error.message`).
    pub message: String,
    /// The machine-readable code (`$.error.code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The offending field, when the API names it (`$.error.field`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One record type of a system.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// How documents name the entity ("Companies", "Customer").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The object name the API uses for this entity where it differs from the key
    /// (Salesforce sObject names in SOQL and `attributes.type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// JSONPath of the record id (`$.id`).
    pub id: Loc<String>,
    /// Whether ids are numbers or strings in the API.
    pub id_type: IdType,
    /// JSONPath of the record's last-modified time, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<Loc<String>>,
    /// The record's fields, from the API contract.
    pub fields: IndexMap<String, FieldSpec>,
    /// How records are listed.
    pub list: ListSpec,
    /// How one record is read (`GET /customers/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<Endpoint>,
    /// How a record is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<CreateSpec>,
    /// How a record is updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// How a record is deleted; absent when the API cannot delete this entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Endpoint>,
    /// How deleted records are discovered.
    #[serde(default)]
    pub deletes: DeleteDiscovery,
    /// A batch write endpoint, where the system has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    /// How often at most the entity is listed whole (`6h`, `30m`; from 1 minute to 7
    /// days): a listing of every record to find deletions (`deletes: full_listing`, beside
    /// an incremental read by time or by sync token), or, for an entity without an
    /// incremental read, its whole read. Between listings the entity's deletions (or,
    /// without an incremental read, its changes) wait; the time of the last complete
    /// listing is kept in the state store. Left out: every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_listing_every: Option<Loc<String>>,
    /// Where the API says which of the entity's fields exist for the signed-in user
    /// (Salesforce's sObject describe): fields differ per org (optional features,
    /// field-level security). Read once per run; queries ask only for the columns the API
    /// has, and a mapping that uses a field it lacks stops with an error naming the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub describe: Option<DescribeSpec>,
}

/// An entity's describe endpoint (see [`EntitySpec::describe`]).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeSpec {
    /// The path (`/sobjects/Contact/describe`).
    pub path: String,
    /// JSONPath of the field names in the answer (default `$.fields[*].name`).
    #[serde(default = "describe_names")]
    pub names: String,
    /// JSONPath of the names of child relationships, which a query reads as nested
    /// results and the system file lists among the fields (default
    /// `$.childRelationships[*].relationshipName`).
    #[serde(default = "describe_relationships")]
    pub relationships: String,
    /// The describe of the child object of each child relationship a query reads in a
    /// subquery (`OrderItems: /sobjects/OrderItem/describe`): the subquery asks only for
    /// the child's columns the org has. A child relationship left out keeps its columns.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub children: IndexMap<String, String>,
}

fn describe_names() -> String {
    "$.fields[*].name".to_owned()
}

fn describe_relationships() -> String {
    "$.childRelationships[*].relationshipName".to_owned()
}

/// The shortest and longest `full_listing_every`.
pub const FULL_LISTING_RANGE: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(60),
    std::time::Duration::from_secs(7 * 24 * 60 * 60),
);

impl EntitySpec {
    /// The interval between full listings (`None`: every run), or why the file's value is
    /// not one.
    pub fn full_listing_every(&self) -> Result<Option<std::time::Duration>, String> {
        let Some(every) = &self.full_listing_every else {
            return Ok(None);
        };
        let text = every.value.trim();
        let interval = humantime::parse_duration(text)
            .map_err(|e| format!("`full_listing_every: {text}` is not a duration ({e})"))?;
        let (min, max) = FULL_LISTING_RANGE;
        if interval < min || interval > max {
            return Err(format!(
                "`full_listing_every: {text}` is outside the allowed range of 1 minute to 7 days"
            ));
        }
        Ok(Some(interval))
    }
}

/// How ids look in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    Integer,
    String,
}

/// One field of a record, from the API contract.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The field's type in the API.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Must be given when a record is created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Set by the server; never written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Written only when the record is created (Salesforce `OriginalOrderId`); left out of
    /// updates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_only: bool,
    /// Written only by updates (Salesforce `ActivatedDate`); left out of creates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_only: bool,
    /// Must be sent with every update, even when unchanged (Keap v1 `company_name`,
    /// `product_name`): the engine copies it from the current record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required_on_update: bool,
    /// May be null.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nullable: bool,
    /// Unique across the entity (the API refuses duplicates).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    /// The allowed values of an `enum` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// For `reference` fields: the entity the id points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// For `object` fields, and `array` fields of objects: the nested fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<IndexMap<String, FieldSpec>>,
    /// For `array` fields of scalars: the item type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<FieldType>,
    /// What the field holds, when its name does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Field types as APIs carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FieldType {
    String,
    /// A JSON integer.
    Integer,
    /// A JSON number (double); converted exactly to and from decimals by the mapping.
    Number,
    /// A decimal number carried as a string (`"12.50"`).
    Decimal,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An instant with offset (RFC 3339, or Salesforce's `+0000` form).
    Datetime,
    Email,
    Phone,
    Url,
    /// ISO 3166-1 alpha-2 (`NO`).
    CountryCode,
    /// ISO 3166-1 alpha-3 (`NOR`), as Keap uses.
    CountryCodeAlpha3,
    /// ISO 4217 (`EUR`).
    CurrencyCode,
    /// One of `values`.
    Enum,
    /// The id of another record (`references`).
    Reference,
    /// A record id.
    Id,
    /// A nested object with `fields`.
    Object,
    /// A list, of `fields` objects or `items` scalars.
    Array,
}

/// An endpoint path relative to the base URL; `{id}` stands for the record id.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The path (`/customers/{id}`).
    pub path: String,
    /// JSONPath of the record in the response, when it is wrapped; defaults to the whole body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Fixed query parameters.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
}

/// How records are listed.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// The list path (`/customers`).
    pub path: String,
    /// JSONPath of the record array in a page (`$.data`).
    pub records: Loc<String>,
    /// Fixed query parameters sent with every list request.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
    /// How pages follow each other.
    pub pagination: Pagination,
    /// How only changed records are read; without it the entity is listed whole and changes
    /// are found by comparing content. Incremental listings are expected oldest change
    /// first (the SOQL template says `ORDER BY`), so a read can resume mid-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// Seconds before the stored watermark where the next incremental read starts again,
    /// to catch records stamped by a skewed clock or committed late; records read twice are
    /// recognised by id and modified time. Also used for tombstones and deletion windows.
    #[serde(default = "default_lookback")]
    pub lookback_seconds: u64,
    /// The most pages one listing of this entity (or of its tombstones) may take. A
    /// listing that goes past it, or whose API answers a page already seen (the same ids)
    /// or sends back a cursor or next link already followed, stops with an error naming
    /// the entity instead of asking forever.
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
}

fn default_lookback() -> u64 {
    60
}
fn default_max_pages() -> u64 {
    100_000
}

/// Pagination styles.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One response holds everything.
    None,
    /// `?offset=0&limit=100`, then the next offset.
    Offset {
        /// Offset parameter name.
        offset_param: String,
        /// Limit parameter name.
        limit_param: String,
        /// Records per page.
        size: u32,
        /// JSONPath of the total count, when pages carry it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<String>,
    },
    /// `?page=1&per_page=100` with a total page count.
    Page {
        /// Page number parameter name.
        page_param: String,
        /// Page size parameter name.
        size_param: String,
        /// Records per page.
        size: u32,
        /// The first page's number.
        #[serde(default = "one")]
        first_page: u32,
        /// JSONPath of the total number of pages.
        total_pages: String,
    },
    /// An opaque cursor from each page (`next_cursor`), sent back as a parameter.
    Cursor {
        /// Cursor parameter name.
        cursor_param: String,
        /// Page size parameter name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        /// Records per page.
        size: u32,
        /// JSONPath of the next cursor; null or absent on the last page.
        next_cursor: String,
    },
    /// Each page links the next by URL (Keap `next`, Salesforce `nextRecordsUrl`).
    NextUrl {
        /// JSONPath of the next page's URL (absolute, or a path on the same host).
        next: String,
        /// JSONPath of a flag that is true on the last page (Salesforce `done`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        done: Option<String>,
        /// Page size parameter of the first request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        /// Records per page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
        /// Stop when a page has fewer records than `size` (Keap sends `next` even on the last page).
        #[serde(default)]
        stop_on_short_page: bool,
    },
}

fn one() -> u32 {
    1
}

/// Incremental read styles.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Incremental {
    /// A query parameter with the last seen modification time (`?modified_since=...`).
    ModifiedSince {
        /// Parameter name.
        param: String,
        /// Whether the API includes records modified exactly at the given instant.
        inclusive: bool,
        /// Page by the modified time instead of the offset or next link: every page after
        /// the first asks again from the newest modified time of the page before (the
        /// records at that instant come again and are dropped as repeats). For APIs whose
        /// list is ordered by modified time and paged by offset, where a record edited
        /// during the read moves to the end and shifts the rest, so that offset paging
        /// skips a record. The list's query must order by the modified time, ascending.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keyset: bool,
    },
    /// A SOQL query (Salesforce). `{fields}` is replaced by the entity's readable fields,
    /// `{since}` by the last seen modification time, `{limit}` by the page size.
    Soql {
        /// The query path (`/query`).
        path: String,
        /// The query for an incremental read.
        query: String,
        /// The query for a first, full read.
        initial_query: String,
    },
    /// A change feed with a sync token (Keap `/products/sync`).
    SyncToken {
        /// The feed path.
        path: String,
        /// Token parameter name.
        param: String,
        /// JSONPath of the next token in a response.
        token: String,
        /// JSONPath of the change entries.
        changes: String,
        /// JSONPath of the record inside an entry.
        record: String,
        /// JSONPath of the entry's status.
        status: String,
        /// The status value that means deleted.
        deleted_status: String,
    },
}

/// How a record is created.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSpec {
    /// The path (`/customers`).
    pub path: String,
    /// What the response body holds.
    #[serde(default)]
    pub response: CreateResponse,
}

/// What a create answers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CreateResponse {
    /// The stored record with its server-assigned fields.
    #[default]
    Record,
    /// Only the new id, at a JSONPath (Salesforce `{"id": ..., "success": true}`).
    Id {
        /// JSONPath of the id.
        path: String,
    },
}

/// How a record is updated.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    /// The path (`/customers/{id}`).
    pub path: String,
    /// PATCH sends the changed fields; PUT replaces the whole record, so the connector reads
    /// the record, merges the changes and writes it all.
    pub method: UpdateMethod,
    /// Read the record again just before an update and leave the update for the next read
    /// when the record changed since it was read (an edit made during the run is merged, not
    /// overwritten). For systems without conditional writes (`If-Match`); costs one read per
    /// update. On by default when the entity has a `get`.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Fields whose change to one of the listed values the API takes only as the only
    /// change of an update (Salesforce: an order's `Status: [Activated]`): such a change is
    /// sent as an update of its own, after one with the other fields.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub alone: IndexMap<String, Vec<String>>,
}

fn yes() -> bool {
    true
}

/// Update methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum UpdateMethod {
    Patch,
    Put,
}

/// How deleted records are discovered.
// Loaded once per system file, so the size of the tombstone variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeleteDiscovery {
    /// Deletions cannot be seen.
    #[default]
    None,
    /// A tombstone endpoint lists deleted ids since a time (Customerp `/deleted`).
    Tombstones {
        /// The path.
        path: String,
        /// Fixed query parameters (`entity: customers`).
        #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
        query: IndexMap<String, String>,
        /// Parameter for the time of the last seen deletion.
        since_param: String,
        /// JSONPath of the tombstone array.
        records: String,
        /// JSONPath of the id inside a tombstone.
        id: String,
        /// JSONPath of the deletion time inside a tombstone.
        deleted_at: String,
        /// How tombstone pages follow each other.
        pagination: Pagination,
    },
    /// Deleted records stay listable with a flag (Custom Webshop `deleted: true`).
    SoftDelete {
        /// JSONPath of the flag in a record.
        flag: String,
        /// List parameter that includes deleted records.
        include_param: String,
    },
    /// Deletions are found by listing everything and looking for linked ids that are gone.
    /// With an incremental read, changes still come from it on every run and the listing is
    /// made every `full_listing_every`; a `sync_token` feed that also reports deletions has
    /// them taken as they come, and the listing finds those it leaves out (Keap products).
    FullListing,
    /// Salesforce `GET /sobjects/{object}/deleted/?start=...&end=...`.
    GetDeleted {
        /// The path (`/sobjects/Contact/deleted/`).
        path: String,
    },
    /// Deletions come through the incremental change feed (`sync_token`) only. For a feed
    /// that may leave deletions out, use `full_listing`.
    ChangeFeed,
}

/// A batch write endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// The batch protocol.
    pub style: BatchStyle,
    /// The path (`/composite/sobjects`).
    pub path: String,
    /// Records per request.
    pub size: u32,
}

/// Batch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStyle {
    /// Salesforce sObject Collections: POST to create, PATCH to update, per-record results.
    SalesforceCollections,
}
