//! Keap records as the API answers them: companies, contacts (with `optional_properties`
//! and the smaller list form), opportunities with their stage and user, products, in Keap's
//! field names and timestamp form.

use serde_json::{Map, Value, json};

use crate::http::ApiRequest;
use crate::keap::{Keap, STAGES, USERS, non_null};
use crate::store::{Record, Store, offset_datetime};

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
        out.insert(
            "email_status".into(),
            json!(if opted_in {
                "SingleOptIn"
            } else {
                "NonMarketable"
            }),
        );
        out.insert(
            "phone_number".into(),
            fields.take("phone_number").unwrap_or(Value::Null),
        );
        out.insert(
            "address".into(),
            fields.take("address").unwrap_or(Value::Null),
        );
        out.insert(
            "website".into(),
            fields.take("website").unwrap_or(Value::Null),
        );
        for name in ["notes", "fax_number", "custom_fields"] {
            if full || optional.iter().any(|wanted| wanted == name) {
                let default = if name == "custom_fields" {
                    json!([])
                } else {
                    Value::Null
                };
                out.insert(name.into(), fields.take(name).unwrap_or(default));
            }
        }
        Value::Object(out)
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
        let company = non_null(fields.get("company"))
            .and_then(|company| company.get("id"))
            .and_then(Value::as_u64)
            .and_then(|id| Self::find(store, "companies", &id.to_string()))
            .map(|company| {
                json!({
                    "id": company.id.parse::<u64>().unwrap_or_default(),
                    "company_name": company.fields.get("company_name").unwrap_or(Value::Null),
                })
            });
        let mut out = Map::new();
        out.insert(
            "id".into(),
            json!(record.id.parse::<u64>().unwrap_or_default()),
        );
        for name in [
            "given_name",
            "middle_name",
            "family_name",
            "prefix",
            "suffix",
            "preferred_name",
        ] {
            out.insert(name.into(), fields.take(name).unwrap_or(Value::Null));
        }
        out.insert("email_addresses".into(), emails);
        for name in [
            "phone_numbers",
            "fax_numbers",
            "addresses",
            "social_accounts",
        ] {
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
        out.insert(
            "email_status".into(),
            json!(if opted_in {
                "SingleOptIn"
            } else {
                "NonMarketable"
            }),
        );
        for name in [
            "anniversary",
            "birthday",
            "contact_type",
            "owner_id",
            "preferred_locale",
            "source_type",
            "spouse_name",
            "time_zone",
            "website",
        ] {
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
        for name in ["job_title", "lead_source_id", "custom_fields"] {
            if full || optional.iter().any(|wanted| wanted == name) {
                let default = if name == "custom_fields" {
                    json!([])
                } else {
                    Value::Null
                };
                out.insert(name.into(), fields.take(name).unwrap_or(default));
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
        for name in [
            "product_name",
            "product_desc",
            "product_price",
            "product_short_desc",
            "sku",
        ] {
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
