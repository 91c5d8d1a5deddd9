//! Keap records as the API answers them: companies, contacts (with `optional_properties`
//! and the smaller list form), opportunities with their stage and user, products, in Keap's
//! field names and timestamp form.

use serde_json::{Map, Value, json};

use crate::http::ApiRequest;
use crate::keap::{Keap, STAGES, USERS, non_null};
use crate::store::{Record, Store, offset_datetime};

// The fields of each answer, in Keap's order, written once for the rendering into a
// `Value` and the one written straight from the stored fields (`Text`).

/// A company's fields after its email, as stored (null when unset).
const COMPANY_PLAIN: [&str; 3] = ["phone_number", "address", "website"];
/// A company's fields answered only when `optional_properties` asks (or on a GET of one).
const COMPANY_OPTIONAL: [&str; 3] = ["notes", "fax_number", "custom_fields"];
/// A contact's names, as stored (null when unset).
const CONTACT_NAMES: [&str; 6] = [
    "given_name",
    "middle_name",
    "family_name",
    "prefix",
    "suffix",
    "preferred_name",
];
/// A contact's lists after its email addresses (empty when unset).
const CONTACT_LISTS: [&str; 4] = [
    "phone_numbers",
    "fax_numbers",
    "addresses",
    "social_accounts",
];
/// A contact's fields after its email status, as stored (null when unset).
const CONTACT_PLAIN: [&str; 9] = [
    "anniversary",
    "birthday",
    "contact_type",
    "owner_id",
    "preferred_locale",
    "source_type",
    "spouse_name",
    "time_zone",
    "website",
];
/// A contact's fields answered only when `optional_properties` asks (or on a GET of one).
const CONTACT_OPTIONAL: [&str; 3] = ["job_title", "lead_source_id", "custom_fields"];
/// A product's fields, as stored (null when unset).
const PRODUCT_PLAIN: [&str; 5] = [
    "product_name",
    "product_desc",
    "product_price",
    "product_short_desc",
    "sku",
];

/// What an optional field answers when the record has none.
fn optional_default(name: &str) -> Value {
    if name == "custom_fields" {
        json!([])
    } else {
        Value::Null
    }
}

impl Keap {
    pub(super) fn render_company(record: &Record, optional: &[String], full: bool) -> Value {
        let mut fields = record.fields.decode();
        let email = fields
            .take("email_address")
            .filter(|email| !email.is_null())
            .unwrap_or(Value::Null);
        let opted_in = !email.is_null() && non_null(fields.get("opt_in_reason")).is_some();
        let mut out = Map::new();
        out.insert(
            "id".into(),
            json!(record.id.parse::<u64>().unwrap_or_default()),
        );
        out.insert(
            "company_name".into(),
            fields.take("company_name").unwrap_or(Value::Null),
        );
        out.insert("email_address".into(), email);
        out.insert("email_opted_in".into(), json!(opted_in));
        out.insert("email_status".into(), json!(email_status(opted_in)));
        for name in COMPANY_PLAIN {
            out.insert(name.into(), fields.take(name).unwrap_or(Value::Null));
        }
        for name in COMPANY_OPTIONAL {
            if full || optional.iter().any(|wanted| wanted == name) {
                out.insert(
                    name.into(),
                    fields.take(name).unwrap_or_else(|| optional_default(name)),
                );
            }
        }
        Value::Object(out)
    }

    /// A contact's company as its answers show it (`id` and `company_name`), from the
    /// stored reference, while that company exists.
    fn contact_company(store: &Store, company: Option<&Value>) -> Option<Value> {
        non_null(company)
            .and_then(|company| company.get("id"))
            .and_then(Value::as_u64)
            .and_then(|id| Self::find(store, "companies", &id.to_string()))
            .map(|company| {
                json!({
                    "id": company.id.parse::<u64>().unwrap_or_default(),
                    "company_name": company.fields.get("company_name").unwrap_or(Value::Null),
                })
            })
    }

    pub(super) fn render_contact(
        store: &Store,
        record: &Record,
        optional: &[String],
        full: bool,
    ) -> Value {
        let mut fields = record.fields.decode();
        let emails = fields.take("email_addresses").unwrap_or_else(|| json!([]));
        let has_email = emails.as_array().is_some_and(|emails| !emails.is_empty());
        let opted_in = has_email && non_null(fields.get("opt_in_reason")).is_some();
        let company = Self::contact_company(store, fields.get("company"));
        let mut out = Map::new();
        out.insert(
            "id".into(),
            json!(record.id.parse::<u64>().unwrap_or_default()),
        );
        for name in CONTACT_NAMES {
            out.insert(name.into(), fields.take(name).unwrap_or(Value::Null));
        }
        out.insert("email_addresses".into(), emails);
        for name in CONTACT_LISTS {
            out.insert(name.into(), fields.take(name).unwrap_or_else(|| json!([])));
        }
        out.insert(
            "company_name".into(),
            company
                .as_ref()
                .and_then(|company| company.get("company_name").cloned())
                .unwrap_or(Value::Null),
        );
        out.insert("company".into(), company.unwrap_or(Value::Null));
        out.insert("email_opted_in".into(), json!(opted_in));
        out.insert("email_status".into(), json!(email_status(opted_in)));
        for name in CONTACT_PLAIN {
            out.insert(name.into(), fields.take(name).unwrap_or(Value::Null));
        }
        out.insert("ScoreValue".into(), Value::Null);
        out.insert(
            "date_created".into(),
            json!(offset_datetime(record.created)),
        );
        out.insert(
            "last_updated".into(),
            json!(offset_datetime(record.modified)),
        );
        out.insert("last_updated_utc_millis".into(), json!(record.modified));
        for name in CONTACT_OPTIONAL {
            if full || optional.iter().any(|wanted| wanted == name) {
                out.insert(
                    name.into(),
                    fields.take(name).unwrap_or_else(|| optional_default(name)),
                );
            }
        }
        if full {
            out.insert("tag_ids".into(), json!([]));
            out.insert("relationships".into(), json!([]));
            let origin = non_null(fields.get("origin"))
                .and_then(|origin| origin.get("ip_address"))
                .map(|ip| json!({"date": offset_datetime(record.created), "ip_address": ip}))
                .unwrap_or(Value::Null);
            out.insert("origin".into(), origin);
        }
        Value::Object(out)
    }

    pub(super) fn render_opportunity(store: &Store, record: &Record) -> Value {
        let mut fields = record.fields.decode();
        let contact = non_null(fields.get("contact"))
            .and_then(|contact| contact.get("id"))
            .and_then(Value::as_u64)
            .map(|id| {
                let found = Self::find(store, "contacts", &id.to_string());
                let field = |name: &str| {
                    found
                        .and_then(|contact| contact.fields.get(name))
                        .unwrap_or(Value::Null)
                };
                let email = found
                    .and_then(|contact| contact.fields.get("email_addresses"))
                    .as_ref()
                    .and_then(Value::as_array)
                    .and_then(|emails| emails.first())
                    .and_then(|email| email.get("email").cloned())
                    .unwrap_or(Value::Null);
                let phone = found
                    .and_then(|contact| contact.fields.get("phone_numbers"))
                    .as_ref()
                    .and_then(Value::as_array)
                    .and_then(|phones| phones.first())
                    .and_then(|phone| phone.get("number").cloned())
                    .unwrap_or(Value::Null);
                let company_name = found
                    .and_then(|contact| contact.fields.get("company"))
                    .as_ref()
                    .and_then(|company| company.get("id"))
                    .and_then(Value::as_u64)
                    .and_then(|id| Self::find(store, "companies", &id.to_string()))
                    .and_then(|company| company.fields.get("company_name"))
                    .unwrap_or(Value::Null);
                json!({
                    "id": id,
                    "first_name": field("given_name"),
                    "last_name": field("family_name"),
                    "email": email,
                    "phone_number": phone,
                    "company_name": company_name,
                    "job_title": field("job_title"),
                })
            })
            .unwrap_or(Value::Null);
        let stage = non_null(fields.get("stage"))
            .and_then(|stage| stage.get("id"))
            .and_then(Value::as_i64)
            .and_then(|id| STAGES.iter().position(|(stage_id, _, _)| *stage_id == id))
            .map(|index| {
                let (id, name, probability) = STAGES[index];
                json!({
                    "id": id,
                    "name": name,
                    "details": {"probability": probability, "stage_order": index + 1, "target_num_days": 14, "check_list_items": []},
                    "reasons": [],
                })
            })
            .unwrap_or(Value::Null);
        let user = non_null(fields.get("user"))
            .and_then(|user| user.get("id"))
            .and_then(Value::as_i64)
            .and_then(|id| USERS.iter().find(|(user_id, _, _)| *user_id == id))
            .map(|(id, first, last)| json!({"id": id, "first_name": first, "last_name": last}))
            .unwrap_or(Value::Null);
        let mut out = Map::new();
        out.insert(
            "id".into(),
            json!(record.id.parse::<u64>().unwrap_or_default()),
        );
        out.insert(
            "opportunity_title".into(),
            fields.take("opportunity_title").unwrap_or(Value::Null),
        );
        out.insert("contact".into(), contact);
        out.insert("stage".into(), stage);
        out.insert("user".into(), user);
        for name in [
            "projected_revenue_low",
            "projected_revenue_high",
            "estimated_close_date",
            "next_action_date",
            "next_action_notes",
            "opportunity_notes",
            "affiliate_id",
        ] {
            out.insert(name.into(), fields.take(name).unwrap_or(Value::Null));
        }
        out.insert(
            "include_in_forecast".into(),
            fields.take("include_in_forecast").unwrap_or(json!(0)),
        );
        out.insert(
            "custom_fields".into(),
            fields.take("custom_fields").unwrap_or_else(|| json!([])),
        );
        out.insert(
            "date_created".into(),
            json!(offset_datetime(record.created)),
        );
        out.insert(
            "last_updated".into(),
            json!(offset_datetime(record.modified)),
        );
        Value::Object(out)
    }

    /// `RestProductV1` (one product) or, with `listed`, `Product_` (list and sync items,
    /// which carry `status` 1/0 instead of `active`).
    pub(super) fn render_product(record: &Record, listed: bool) -> Value {
        let mut fields = record.fields.decode();
        let active = fields
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut out = Map::new();
        out.insert(
            "id".into(),
            json!(record.id.parse::<u64>().unwrap_or_default()),
        );
        for name in PRODUCT_PLAIN {
            out.insert(name.into(), fields.take(name).unwrap_or(Value::Null));
        }
        if listed {
            out.insert("status".into(), json!(i32::from(active)));
            out.insert("product_options".into(), json!([]));
        } else {
            out.insert("active".into(), json!(active));
        }
        out.insert(
            "subscription_only".into(),
            fields.take("subscription_only").unwrap_or(json!(false)),
        );
        out.insert("subscription_plans".into(), json!([]));
        out.insert("url".into(), Value::Null);
        Value::Object(out)
    }

    pub(super) fn render(
        store: &Store,
        entity: &str,
        record: &Record,
        optional: &[String],
        full: bool,
    ) -> Value {
        match entity {
            "companies" => Self::render_company(record, optional, full),
            "contacts" => Self::render_contact(store, record, optional, full),
            "opportunities" => Self::render_opportunity(store, record),
            _ => Self::render_product(record, false),
        }
    }

    pub(super) fn optional_properties(request: &ApiRequest) -> Vec<String> {
        request
            .query
            .iter()
            .filter(|(key, _)| key == "optional_properties")
            .flat_map(|(_, value)| value.split(',').map(|name| name.trim().to_string()))
            .filter(|name| !name.is_empty())
            .collect()
    }
}

/// Which kind of record [`Text`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Company,
    Contact,
    /// A product: in a list's form (`status`, `product_options`) unless `full`.
    Product,
}

/// A company, contact or product written out as JSON text straight from its encoded
/// fields, as [`Keap::render_company`], [`Keap::render_contact`] and
/// [`Keap::render_product`] render it (plus, for a GET of a contact, the `tag_ids` its
/// answer carries last). A product is written in a list's form when not `full`, as lists
/// render it; every answer about one product renders it whole.
pub(super) struct Text<'a> {
    kind: TextKind,
    record: &'a Record,
    optional: &'a [String],
    full: bool,
    tag_ids: bool,
    /// The contact's company (`{id, company_name}`) or null, and its origin; read before
    /// the fields are viewed encoded, as they need decoded values and other records.
    company: Value,
    origin: Value,
}

impl Keap {
    /// A company, contact or product to write out as text; `None` for opportunities,
    /// which are rendered as values.
    pub(super) fn text<'a>(
        store: &Store,
        entity: &str,
        record: &'a Record,
        optional: &'a [String],
        full: bool,
        tag_ids: bool,
    ) -> Option<Text<'a>> {
        let kind = match entity {
            "companies" => TextKind::Company,
            "contacts" => TextKind::Contact,
            "products" => TextKind::Product,
            _ => return None,
        };
        let (mut company, mut origin) = (Value::Null, Value::Null);
        if kind == TextKind::Contact {
            company = Self::contact_company(store, record.fields.get("company").as_ref())
                .unwrap_or(Value::Null);
            if full {
                origin = record
                    .fields
                    .get("origin")
                    .as_ref()
                    .and_then(|origin| non_null(Some(origin))?.get("ip_address"))
                    .map(|ip| json!({"date": offset_datetime(record.created), "ip_address": ip}))
                    .unwrap_or(Value::Null);
            }
        }
        Some(Text {
            kind,
            record,
            optional,
            full,
            tag_ids,
            company,
            origin,
        })
    }
}

/// Writes a stored field, or `default` when the record has none.
fn stored<M: serde::ser::SerializeMap>(
    map: &mut M,
    fields: &crate::compact::EncodedView<'_>,
    name: &str,
    default: &Value,
) -> Result<(), M::Error> {
    match fields.value(name) {
        Some(value) => map.serialize_entry(name, &value),
        None => map.serialize_entry(name, default),
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let record = self.record;
        let null = Value::Null;
        let empty = json!([]);
        let wanted = |name: &str| self.full || self.optional.iter().any(|own| own == name);
        // Holds the table of field names for reading until the record is written.
        let fields = record.fields.encoded();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &record.id.parse::<u64>().unwrap_or_default())?;
        match self.kind {
            TextKind::Company => {
                let opted_in = fields.is_set("email_address") && fields.is_set("opt_in_reason");
                stored(&mut map, &fields, "company_name", &null)?;
                stored(&mut map, &fields, "email_address", &null)?;
                map.serialize_entry("email_opted_in", &opted_in)?;
                map.serialize_entry("email_status", email_status(opted_in))?;
                for name in COMPANY_PLAIN {
                    stored(&mut map, &fields, name, &null)?;
                }
                for name in COMPANY_OPTIONAL.into_iter().filter(|name| wanted(name)) {
                    stored(&mut map, &fields, name, &optional_default(name))?;
                }
            }
            TextKind::Contact => {
                let opted_in =
                    fields.is_nonempty_array("email_addresses") && fields.is_set("opt_in_reason");
                for name in CONTACT_NAMES {
                    stored(&mut map, &fields, name, &null)?;
                }
                for name in std::iter::once("email_addresses").chain(CONTACT_LISTS) {
                    stored(&mut map, &fields, name, &empty)?;
                }
                map.serialize_entry(
                    "company_name",
                    self.company.get("company_name").unwrap_or(&null),
                )?;
                map.serialize_entry("company", &self.company)?;
                map.serialize_entry("email_opted_in", &opted_in)?;
                map.serialize_entry("email_status", email_status(opted_in))?;
                for name in CONTACT_PLAIN {
                    stored(&mut map, &fields, name, &null)?;
                }
                map.serialize_entry("ScoreValue", &null)?;
                map.serialize_entry("date_created", &offset_datetime(record.created))?;
                map.serialize_entry("last_updated", &offset_datetime(record.modified))?;
                map.serialize_entry("last_updated_utc_millis", &record.modified)?;
                for name in CONTACT_OPTIONAL.into_iter().filter(|name| wanted(name)) {
                    stored(&mut map, &fields, name, &optional_default(name))?;
                }
                if self.full {
                    map.serialize_entry("tag_ids", &empty)?;
                    map.serialize_entry("relationships", &empty)?;
                    map.serialize_entry("origin", &self.origin)?;
                }
                if self.tag_ids && !self.full {
                    map.serialize_entry("tag_ids", &empty)?;
                }
            }
            TextKind::Product => {
                let active = fields.is_true("active");
                for name in PRODUCT_PLAIN {
                    stored(&mut map, &fields, name, &null)?;
                }
                if self.full {
                    map.serialize_entry("active", &active)?;
                } else {
                    map.serialize_entry("status", &i32::from(active))?;
                    map.serialize_entry("product_options", &empty)?;
                }
                stored(&mut map, &fields, "subscription_only", &Value::Bool(false))?;
                map.serialize_entry("subscription_plans", &empty)?;
                map.serialize_entry("url", &null)?;
            }
        }
        map.end()
    }
}

fn email_status(opted_in: bool) -> &'static str {
    if opted_in {
        "SingleOptIn"
    } else {
        "NonMarketable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend as _;
    use crate::http::ApiRequest;
    use crate::store::Fields;
    use axum::http::Method;

    fn keap() -> Keap {
        Keap::new(crate::test_shared(), "http://127.0.0.1:1", Vec::new()).expect("contract")
    }

    fn map(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    /// Companies and contacts of every shape rendering meets, stored in `keap`'s store:
    /// no fields, every field, nulls where values may be, a company that is gone.
    fn fill(keap: &Keap) -> Vec<(&'static str, String)> {
        let companies = [
            json!({}),
            json!({"company_name": "Acme ✓", "email_address": "a@acme.example", "opt_in_reason": "asked",
                   "phone_number": {"number": "+47 1", "type": "Work"}, "address": {"line1": "x", "country_code": "NOR"},
                   "website": "https://acme.example", "notes": "n", "fax_number": {"number": "2"},
                   "custom_fields": [{"id": 1, "content": "c"}], "not_rendered": 1}),
            json!({"company_name": null, "email_address": null, "opt_in_reason": "asked"}),
        ];
        let contacts = [
            json!({}),
            json!({"given_name": "Ann", "family_name": "Lee \"Q\"", "middle_name": null,
                   "email_addresses": [{"email": "ann@example.com", "field": "EMAIL1"}], "opt_in_reason": "form",
                   "phone_numbers": [{"number": "+47 2", "field": "PHONE1"}], "company": {"id": 2},
                   "origin": {"ip_address": "10.0.0.1"}, "job_title": "CTO", "lead_source_id": 4,
                   "custom_fields": [], "website": "w", "owner_id": 9, "addresses": [], "birthday": "2000-01-01T00:00:00.000+0000"}),
            json!({"email_addresses": [], "opt_in_reason": "form", "company": {"id": 99}, "origin": null}),
            json!({"email_addresses": null, "company": null, "origin": {"no_ip": 1}, "job_title": null}),
            json!({"company": {"id": 3, "company_name": "stale"}, "origin": {"ip_address": null}}),
        ];
        let products = [
            json!({}),
            json!({"product_name": "P ✓", "product_desc": null, "product_price": 12.5, "sku": "S-1",
                   "active": true, "subscription_only": true, "product_short_desc": "s"}),
            json!({"active": false, "subscription_only": null}),
            json!({"active": "yes"}),
        ];
        let mut store = keap.shared.store();
        let mut out = Vec::new();
        for (entity, bodies) in [
            ("companies", &companies[..]),
            ("contacts", &contacts[..]),
            ("products", &products[..]),
        ] {
            let entity_store = store.entity_mut("keap", entity);
            for body in bodies {
                let id = entity_store.allocate_id().to_string();
                let at = 1_731_011_713_217 + out.len() as i64;
                let mut record =
                    entity_store.new_record(id.clone(), Fields::from(map(body.clone())), at);
                record.modified = at + 1_000;
                entity_store.put(record);
                out.push((entity, id));
            }
        }
        out
    }

    #[test]
    fn companies_and_contacts_are_written_as_rendered() {
        let keap = keap();
        let records = fill(&keap);
        let store = keap.shared.store();
        let optionals: [&[&str]; 3] = [
            &[],
            &["job_title", "custom_fields", "notes"],
            &["fax_number", "lead_source_id"],
        ];
        for (entity, id) in &records {
            let record = store
                .entity("keap", entity)
                .and_then(|e| e.get(id))
                .expect("record");
            for optional in optionals {
                let optional: Vec<String> = optional.iter().map(|name| name.to_string()).collect();
                for (full, tag_ids) in [(false, false), (true, false), (false, true), (true, true)]
                {
                    let text =
                        Keap::text(&store, entity, record, &optional, full, tag_ids).expect("text");
                    let mut expected = if *entity == "products" {
                        Keap::render_product(record, !full)
                    } else {
                        Keap::render(&store, entity, record, &optional, full)
                    };
                    if tag_ids && *entity == "contacts" {
                        expected
                            .as_object_mut()
                            .expect("object")
                            .insert("tag_ids".into(), json!([]));
                    }
                    assert_eq!(
                        serde_json::to_string(&text).expect("text"),
                        serde_json::to_string(&expected).expect("text"),
                        "{entity} {id} {optional:?} full {full} tag_ids {tag_ids}"
                    );
                }
            }
        }
        assert!(
            Keap::text(
                &store,
                "opportunities",
                store
                    .entity("keap", "contacts")
                    .and_then(|e| e.get("1"))
                    .expect("record"),
                &[],
                true,
                false
            )
            .is_none()
        );
    }

    #[test]
    fn pages_reads_and_edits_between_pages_answer_as_rendered() {
        let keap = keap();
        fill(&keap);
        let over_http = |method: Method, path: &str| {
            let mut request = ApiRequest::new(method, path, Default::default(), Default::default());
            request.direct = false;
            request
        };
        let expected_page = |entity: &str,
                             ids: &[&str],
                             optional: &[String],
                             count: usize,
                             next: &str,
                             previous: &str| {
            let store = keap.shared.store();
            let page: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let record = store
                        .entity("keap", entity)
                        .and_then(|e| e.get(id))
                        .expect("record");
                    Keap::render(&store, entity, record, optional, false)
                })
                .collect();
            let mut body = serde_json::Map::new();
            body.insert(entity.to_string(), Value::Array(page));
            body.insert("count".into(), json!(count));
            body.insert("next".into(), json!(next));
            body.insert("previous".into(), json!(previous));
            serde_json::to_string(&body).expect("text")
        };
        let text = |response: crate::http::ApiResponse| {
            assert_eq!(response.status, axum::http::StatusCode::OK);
            String::from_utf8(response.text.expect("written out").into_vec()).expect("UTF-8")
        };
        let root = "http://127.0.0.1:1/crm/rest/v1";
        assert_eq!(
            text(keap.route_inner(&over_http(
                Method::GET,
                "/crm/rest/v1/companies?limit=2&offset=1"
            ))),
            expected_page(
                "companies",
                &["2", "3"],
                &[],
                3,
                &format!("{root}/companies/?limit=2&offset=3"),
                &format!("{root}/companies/?limit=2&offset=0")
            )
        );
        let optional = vec!["job_title".to_string()];
        assert_eq!(
            text(keap.route_inner(&over_http(
                Method::GET,
                "/crm/rest/v1/contacts?limit=3&optional_properties=job_title&order=id"
            ))),
            expected_page(
                "contacts",
                &["1", "2", "3"],
                &optional,
                5,
                &format!("{root}/contacts/?limit=3&offset=3&order=id"),
                &format!("{root}/contacts/?limit=3&offset=0&order=id")
            )
        );
        // Products list in their list form, with the feed's token.
        let products =
            text(keap.route_inner(&over_http(Method::GET, "/crm/rest/v1/products?limit=2")));
        let expected = {
            let store = keap.shared.store();
            let entity = store.entity("keap", "products").expect("products");
            let page: Vec<Value> = ["1", "2"]
                .iter()
                .map(|id| Keap::render_product(entity.get(id).expect("product"), true))
                .collect();
            json!({"products": page, "count": 4, "next": format!("{root}/products/?limit=2&offset=2"),
                   "previous": format!("{root}/products/?limit=2&offset=0"), "sync_token": entity.next_change.to_string()})
        };
        assert_eq!(products, serde_json::to_string(&expected).expect("text"));
        // A read by id carries `tag_ids` last; direct access gets the same as a value.
        let read = text(keap.route_inner(&over_http(Method::GET, "/crm/rest/v1/contacts/2")));
        let direct = keap.route_inner(&crate::request(
            Method::GET,
            "/crm/rest/v1/contacts/2",
            None,
        ));
        assert!(direct.text.is_none());
        assert_eq!(
            read,
            serde_json::to_string(&direct.body.expect("a value")).expect("text")
        );
        assert!(read.ends_with(r#""tag_ids":[]}"#), "{read}");
        // A person edits the first contact of a page with more after it, and only then.
        keap.edit_between_pages(2);
        text(keap.route_inner(&over_http(Method::GET, "/crm/rest/v1/contacts?limit=5")));
        text(keap.route_inner(&over_http(
            Method::GET,
            "/crm/rest/v1/contacts?limit=2&offset=2",
        )));
        let store = keap.shared.store();
        let title = |id: &str| {
            store
                .entity("keap", "contacts")
                .and_then(|e| e.get(id))
                .and_then(|r| r.fields.get("job_title"))
        };
        assert_eq!(title("1"), None, "the whole list in one page: no edit");
        assert_eq!(title("3"), Some(json!(" (edited during a read)")));
    }
}
