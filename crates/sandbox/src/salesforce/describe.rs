//! The simulated objects and their fields, from describe-derived tables (see the module
//! comment of `salesforce`), their 18-character ids with real key prefixes and case-safe
//! suffixes, and the endpoints that describe the org: versions, `limits`, the global
//! describe and one object's describe.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::ApiResponse;
use crate::salesforce::{API_PREFIX, Salesforce, lock};

/// The simulated objects and their key prefixes.
pub(super) const OBJECTS: [(&str, &str); 10] = [
    ("Account", "001"),
    ("Contact", "003"),
    ("Opportunity", "006"),
    ("Order", "801"),
    ("OrderItem", "802"),
    ("Product2", "01t"),
    ("Pricebook2", "01s"),
    ("PricebookEntry", "01u"),
    ("Quote", "0Q0"),
    ("QuoteLineItem", "0QL"),
];

#[derive(Debug, Clone)]
pub(super) struct FieldDef {
    pub(super) name: String,
    pub(super) label: String,
    pub(super) kind: String,
    pub(super) nillable: bool,
    pub(super) createable: bool,
    pub(super) updateable: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ObjectDef {
    pub(super) name: &'static str,
    pub(super) prefix: &'static str,
    pub(super) fields: Vec<FieldDef>,
}

impl ObjectDef {
    pub(super) fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
    }
}

pub(super) fn load_objects() -> Vec<ObjectDef> {
    let mut objects: Vec<ObjectDef> = OBJECTS
        .iter()
        .map(|(name, prefix)| ObjectDef {
            name,
            prefix,
            fields: Vec::new(),
        })
        .collect();
    let tables = [
        include_str!("../../../../contracts/salesforce-fields.csv"),
        include_str!("../contracts/salesforce-extra-fields.csv"),
    ];
    for line in tables.iter().flat_map(|table| table.lines().skip(1)) {
        let columns: Vec<&str> = line.trim().split(',').collect();
        let [object, name, label, kind, nillable, createable, updateable] = columns.as_slice()
        else {
            continue;
        };
        if let Some(definition) = objects
            .iter_mut()
            .find(|definition| definition.name == *object)
        {
            definition.fields.push(FieldDef {
                name: name.to_string(),
                label: label.to_string(),
                kind: kind.to_string(),
                nillable: *nillable == "True",
                createable: *createable == "True",
                updateable: *updateable == "True",
            });
        }
    }
    objects
}

/// The object a reference field points at.
pub(super) fn reference_target(object: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "AccountId" => "Account",
        "ContactId"
        | "ReportsToId"
        | "BillToContactId"
        | "ShipToContactId"
        | "CustomerAuthorizedById" => "Contact",
        "OrderId" | "OriginalOrderId" => "Order",
        "OriginalOrderItemId" => "OrderItem",
        "Product2Id" => "Product2",
        "Pricebook2Id" => "Pricebook2",
        "PricebookEntryId" => "PricebookEntry",
        "QuoteId" | "SyncedQuoteId" => "Quote",
        "OpportunityId" => "Opportunity",
        "ParentId" if object == "Account" => "Account",
        "OwnerId"
        | "CreatedById"
        | "LastModifiedById"
        | "CompanyAuthorizedById"
        | "ActivatedById" => "User",
        _ => return None,
    })
}

pub(super) const ID_ALPHABET: &[u8] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The three-character suffix that makes a 15-character id case-insensitively unique.
pub(super) fn id_suffix(id15: &str) -> String {
    const SUFFIX: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let flags = chunk
                .iter()
                .enumerate()
                .filter(|(_, byte)| byte.is_ascii_uppercase())
                .fold(0usize, |flags, (index, _)| flags | (1 << index));
            SUFFIX[flags] as char
        })
        .collect()
}

/// An 18-character id: key prefix, pod, sequence number in base 62, suffix.
pub fn sf_id(prefix: &str, number: u64) -> String {
    let mut digits = Vec::new();
    let mut rest = number;
    for _ in 0..10 {
        digits.push(ID_ALPHABET[(rest % 62) as usize]);
        rest /= 62;
    }
    digits.reverse();
    let id15 = format!("{prefix}8d{}", String::from_utf8_lossy(&digits));
    format!("{id15}{}", id_suffix(&id15))
}

/// Accepts a 15- or 18-character id and returns its 18-character form.
pub(super) fn normalize_id(text: &str) -> Option<String> {
    if !text.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return None;
    }
    match text.len() {
        15 => Some(format!("{text}{}", id_suffix(text))),
        18 => {
            let suffix = id_suffix(&text[..15]);
            text[15..]
                .eq_ignore_ascii_case(&suffix)
                .then(|| format!("{}{suffix}", &text[..15]))
        }
        _ => None,
    }
}

impl Salesforce {
    pub(super) fn versions(&self) -> ApiResponse {
        let versions: Vec<Value> = [("Spring '24", "60.0"), ("Summer '24", "61.0"), ("Winter '25", "62.0")]
            .iter()
            .map(|(label, version)| json!({"label": label, "url": format!("{API_PREFIX}v{version}"), "version": version}))
            .collect();
        ApiResponse::json(StatusCode::OK, Value::Array(versions))
    }

    /// `GET /limits`: the daily API request allowance and what is left of it.
    pub(super) fn limits(&self) -> ApiResponse {
        let used = lock(&self.usage)
            .usage(self.shared.clock.now())
            .first()
            .map_or(0, |usage| usage.used);
        ApiResponse::json(
            StatusCode::OK,
            json!({"DailyApiRequests": {"Max": self.daily_limit, "Remaining": self.daily_limit.saturating_sub(used)}}),
        )
    }

    pub(super) fn global_describe(&self, version: &str) -> ApiResponse {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|object| {
                json!({
                    "name": object.name, "label": object.name, "keyPrefix": object.prefix,
                    "createable": true, "updateable": true, "deletable": true, "queryable": true,
                    "urls": {"sobject": format!("{API_PREFIX}{version}/sobjects/{}", object.name)},
                })
            })
            .collect();
        ApiResponse::json(
            StatusCode::OK,
            json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects}),
        )
    }

    pub(super) fn describe(&self, object: &ObjectDef) -> ApiResponse {
        let fields: Vec<Value> = object
            .fields
            .iter()
            .map(|field| {
                json!({
                    "name": field.name, "label": field.label, "type": field.kind,
                    "nillable": field.nillable, "createable": field.createable, "updateable": field.updateable,
                    "referenceTo": reference_target(object.name, &field.name).map(|target| vec![target]).unwrap_or_default(),
                })
            })
            .collect();
        // Real behaviour (REST API Developer Guide, "sObject Describe"): child relationships
        // are listed apart from the fields, by `relationshipName`.
        let children: Vec<Value> = [
            "OrderItems",
            "QuoteLineItems",
            "Contacts",
            "Opportunities",
            "Orders",
            "Quotes",
            "PricebookEntries",
        ]
        .into_iter()
        .filter_map(|name| super::query::child_relationship(object.name, name))
        .map(|(child, field, name)| {
            json!({"childSObject": child, "field": field, "relationshipName": name})
        })
        .collect();
        ApiResponse::json(
            StatusCode::OK,
            // Real behaviour (REST API Developer Guide, "sObject Describe"; SOAP API Developer
            // Guide, `DescribeSObjectResult`): the object's describe says what the signed-in
            // user may do with its records (`createable`, `updateable`, `deletable`,
            // `queryable`); the integration user here has every object permission.
            json!({"name": object.name, "label": object.name, "keyPrefix": object.prefix,
                   "createable": true, "updateable": true, "deletable": true, "queryable": true,
                   "fields": fields, "childRelationships": children}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_case_safe_suffix() {
        let id = sf_id("003", 1);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("003"));
        assert_eq!(normalize_id(&id[..15]), Some(id.clone()));
        assert_eq!(normalize_id(&id), Some(id.clone()));
        // The documented example: 001A0000006Vm9r -> 001A0000006Vm9rIAC.
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(normalize_id("not-an-id"), None);
    }

    #[test]
    fn field_tables_cover_every_object() {
        let objects = load_objects();
        for object in &objects {
            assert!(object.field("Id").is_some(), "{} has no Id", object.name);
            assert!(
                object.field("SystemModstamp").is_some(),
                "{} has no SystemModstamp",
                object.name
            );
        }
        let order = objects
            .iter()
            .find(|object| object.name == "Order")
            .expect("Order is simulated");
        let total = order.field("TotalAmount").expect("Order has TotalAmount");
        assert!(!total.createable && !total.updateable);
    }
}
