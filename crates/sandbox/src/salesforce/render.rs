//! Rendering records as the REST API answers them: `attributes`, computed fields (Contact
//! `Name`, audit fields, values read through a parent) and compound addresses.

use serde_json::{Map, Value, json};

use crate::salesforce::describe::{FieldDef, ObjectDef};
use crate::salesforce::{API_PREFIX, SYSTEM, Salesforce};
use crate::store::{Record, Store, offset_datetime};

impl Salesforce {
    pub(super) fn url(&self, version: &str, object: &str, id: &str) -> String {
        format!("{API_PREFIX}{version}/sobjects/{object}/{id}")
    }

    pub(super) fn value_of(
        &self,
        store: &Store,
        object: &ObjectDef,
        record: &Record,
        field: &FieldDef,
    ) -> Value {
        match field.name.as_str() {
            "Id" => return json!(record.id),
            "IsDeleted" => return json!(!record.is_live()),
            "CreatedDate" => return json!(offset_datetime(record.created)),
            "LastModifiedDate" => return json!(offset_datetime(record.modified)),
            "SystemModstamp" => return json!(offset_datetime(record.touched)),
            "CreatedById" | "LastModifiedById" => return json!(self.user_id),
            _ => {}
        }
        match (object.name, field.name.as_str()) {
            ("Contact", "Name") => {
                let first = record.fields.get_str("FirstName").unwrap_or_default();
                let last = record.fields.get_str("LastName").unwrap_or_default();
                return json!(format!("{first} {last}").trim());
            }
            ("PricebookEntry", "Name" | "ProductCode") => {
                let source = if field.name == "Name" {
                    "Name"
                } else {
                    "ProductCode"
                };
                return record
                    .fields
                    .get_str("Product2Id")
                    .and_then(|id| store.entity(SYSTEM, "Product2")?.get(id))
                    .and_then(|product| product.fields.get(source))
                    .unwrap_or(Value::Null);
            }
            ("Quote", "AccountId") => {
                return record
                    .fields
                    .get_str("OpportunityId")
                    .and_then(|id| store.entity(SYSTEM, "Opportunity")?.get(id))
                    .and_then(|opportunity| opportunity.fields.get("AccountId"))
                    .unwrap_or(Value::Null);
            }
            _ => {}
        }
        if field.kind == "address" {
            let prefix = field.name.trim_end_matches("Address");
            const PARTS: [(&str, &str); 10] = [
                ("street", "Street"),
                ("city", "City"),
                ("state", "State"),
                ("postalCode", "PostalCode"),
                ("country", "Country"),
                ("stateCode", "StateCode"),
                ("countryCode", "CountryCode"),
                ("latitude", "Latitude"),
                ("longitude", "Longitude"),
                ("geocodeAccuracy", "GeocodeAccuracy"),
            ];
            let parts: Vec<(String, Value)> = PARTS
                .iter()
                .filter(|(_, suffix)| object.field(&format!("{prefix}{suffix}")).is_some())
                .map(|(key, suffix)| {
                    let value = record
                        .fields
                        .get(&format!("{prefix}{suffix}"))
                        .unwrap_or(Value::Null);
                    (key.to_string(), value)
                })
                .collect();
            if parts.iter().all(|(_, value)| value.is_null()) {
                return Value::Null;
            }
            return Value::Object(parts.into_iter().collect());
        }
        match record.fields.get(&field.name) {
            Some(value) => value.clone(),
            None if field.kind == "boolean" => json!(false),
            None => Value::Null,
        }
    }

    /// A record with `attributes` and the given fields (all fields when `None`).
    pub(super) fn render(
        &self,
        store: &Store,
        version: &str,
        object: &ObjectDef,
        record: &Record,
        fields: Option<&[String]>,
    ) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": object.name, "url": self.url(version, object.name, &record.id)}),
        );
        match fields {
            Some(names) => {
                for name in names {
                    if let Some(field) = object.field(name) {
                        out.insert(
                            field.name.clone(),
                            self.value_of(store, object, record, field),
                        );
                    }
                }
            }
            None => {
                for field in &object.fields {
                    out.insert(
                        field.name.clone(),
                        self.value_of(store, object, record, field),
                    );
                }
            }
        }
        Value::Object(out)
    }
}
