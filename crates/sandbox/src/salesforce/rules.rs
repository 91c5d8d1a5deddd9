//! Record rules of a write, checked before anything is stored: each value normalised for its
//! field (JSON type, ids and the live record they refer to, emails, dates), the body's keys
//! against the fields that are createable or updateable, required fields, and the rules of
//! particular objects (order status picklist, a line's price book entry and product, one
//! standard price per product). A write that passes becomes a [`Prepared`] write.

use serde_json::{Map, Value, json};

use crate::salesforce::describe::{FieldDef, ObjectDef, normalize_id, reference_target};
use crate::salesforce::{SYSTEM, Salesforce, SfError, entity_is_deleted, not_found};
use crate::schema::is_email;
use crate::store::{Record, Store, offset_datetime, parse_lenient_datetime};

pub(super) fn cents(value: Option<&Value>) -> i64 {
    value
        .and_then(Value::as_f64)
        .map_or(0, |value| (value * 100.0).round() as i64)
}

pub(super) fn money(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

/// A validated write, ready to apply.
pub(super) struct Prepared {
    pub(super) object: &'static str,
    pub(super) id: Option<String>,
    pub(super) fields: Map<String, Value>,
}

impl Salesforce {
    pub(super) fn find_live<'a>(store: &'a Store, object: &str, id: &str) -> Option<&'a Record> {
        store
            .entity(SYSTEM, object)?
            .get(id)
            .filter(|record| record.is_live())
    }

    /// Checks and normalises one value for a field.
    pub(super) fn normalize_value(
        &self,
        store: &Store,
        object: &ObjectDef,
        field: &FieldDef,
        value: &Value,
    ) -> Result<Value, SfError> {
        let parse_error = |expected: &str| {
            SfError::bad(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of {expected} from {} value {value} or request may be missing a required field",
                    json_kind(value)
                ),
            )
        };
        if value.is_null() {
            if field.kind == "boolean" {
                return Ok(json!(false));
            }
            if !field.nillable {
                return Err(SfError::bad(
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", field.name),
                )
                .with_fields(vec![field.name.clone()]));
            }
            return Ok(Value::Null);
        }
        match field.kind.as_str() {
            "id" | "reference" => {
                let text = value.as_str().ok_or_else(|| parse_error("reference"))?;
                let id = normalize_id(text).ok_or_else(|| {
                    SfError::bad(
                        "MALFORMED_ID",
                        format!("{}: id value of incorrect type: {text}", field.label),
                    )
                    .with_fields(vec![field.name.clone()])
                })?;
                let invalid = || {
                    SfError::bad(
                        "INVALID_CROSS_REFERENCE_KEY",
                        format!("invalid cross reference id: {text}"),
                    )
                    .with_fields(vec![field.name.clone()])
                };
                match reference_target(object.name, &field.name) {
                    Some("User") if id != self.user_id => return Err(invalid()),
                    Some("User") | None => {}
                    Some(target) => {
                        let prefix = self.object(target).map_or("", |object| object.prefix);
                        if !id.starts_with(prefix) || Self::find_live(store, target, &id).is_none()
                        {
                            return Err(invalid());
                        }
                    }
                }
                Ok(Value::String(id))
            }
            "boolean" => match value {
                Value::Bool(_) => Ok(value.clone()),
                Value::String(text) if text == "true" || text == "false" => {
                    Ok(json!(text == "true"))
                }
                _ => Err(parse_error("boolean")),
            },
            "double" | "currency" | "percent" => match value {
                Value::Number(_) => Ok(value.clone()),
                Value::String(text) => text
                    .trim()
                    .parse::<f64>()
                    .map(|number| json!(number))
                    .map_err(|_| parse_error("double")),
                _ => Err(parse_error("double")),
            },
            "int" => match value {
                Value::Number(number) if number.is_i64() => Ok(value.clone()),
                Value::String(text) => text
                    .trim()
                    .parse::<i64>()
                    .map(|number| json!(number))
                    .map_err(|_| parse_error("int")),
                _ => Err(parse_error("int")),
            },
            "date" => {
                let text = value.as_str().ok_or_else(|| parse_error("date"))?;
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(|_| value.clone())
                    .map_err(|_| parse_error("date"))
            }
            "datetime" => {
                let text = value.as_str().ok_or_else(|| parse_error("datetime"))?;
                parse_lenient_datetime(text)
                    .map(|at| Value::String(offset_datetime(at)))
                    .ok_or_else(|| parse_error("datetime"))
            }
            "email" => {
                let text = value.as_str().ok_or_else(|| parse_error("String"))?;
                if !text.is_empty() && !is_email(text) {
                    return Err(SfError::bad(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{}: invalid email address: {text}", field.label),
                    )
                    .with_fields(vec![field.name.clone()]));
                }
                Ok(value.clone())
            }
            _ => match value {
                Value::String(_) => Ok(value.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(Value::String(value.to_string())),
                _ => Err(parse_error("String")),
            },
        }
    }

    /// Resolves body keys to fields and normalises their values.
    pub(super) fn normalize_body(
        &self,
        store: &Store,
        object: &ObjectDef,
        body: &Map<String, Value>,
        creating: bool,
    ) -> Result<Map<String, Value>, SfError> {
        let mut out = Map::new();
        let mut locked = Vec::new();
        for (key, value) in body {
            if key == "attributes" || (!creating && key.eq_ignore_ascii_case("id")) {
                continue;
            }
            let field = object.field(key).ok_or_else(|| {
                SfError::bad(
                    "INVALID_FIELD",
                    format!("No such column '{key}' on sobject of type {}", object.name),
                )
            })?;
            let allowed = if creating {
                field.createable
            } else {
                field.updateable
            };
            if !allowed {
                locked.push(field.name.clone());
                continue;
            }
            out.insert(
                field.name.clone(),
                self.normalize_value(store, object, field, value)?,
            );
        }
        if !locked.is_empty() {
            return Err(SfError::bad(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    locked.join(", ")
                ),
            )
            .with_fields(locked));
        }
        Ok(out)
    }

    pub(super) fn prepare_create(
        &self,
        store: &Store,
        object: &ObjectDef,
        body: &Map<String, Value>,
    ) -> Result<Prepared, SfError> {
        if body.keys().any(|key| key.eq_ignore_ascii_case("id")) {
            return Err(SfError::bad(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "cannot specify Id in an insert call",
            )
            .with_fields(vec!["Id".into()]));
        }
        let mut fields = self.normalize_body(store, object, body, true)?;
        let mut missing: Vec<String> = object
            .fields
            .iter()
            .filter(|field| {
                field.createable
                    && !field.nillable
                    && field.kind != "boolean"
                    && field.name != "OwnerId"
            })
            .filter(|field| fields.get(&field.name).is_none_or(Value::is_null))
            .map(|field| field.name.clone())
            .collect();
        let practically_required: &[&str] = match object.name {
            "Order" => &["AccountId"],
            "OrderItem" | "QuoteLineItem" => &["UnitPrice"],
            _ => &[],
        };
        for name in practically_required {
            if fields.get(*name).is_none_or(Value::is_null)
                && !missing.iter().any(|field| field == name)
            {
                missing.push(name.to_string());
            }
        }
        if object.name == "QuoteLineItem"
            && fields.get("PricebookEntryId").is_none_or(Value::is_null)
            && fields.get("Product2Id").is_none_or(Value::is_null)
        {
            missing.push("PricebookEntryId".into());
        }
        if !missing.is_empty() {
            return Err(SfError::bad(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            )
            .with_fields(missing));
        }
        self.object_rules(store, object, None, &mut fields)?;
        Ok(Prepared {
            object: object.name,
            id: None,
            fields,
        })
    }

    pub(super) fn prepare_update(
        &self,
        store: &Store,
        object: &ObjectDef,
        id: &str,
        body: &Map<String, Value>,
        integration: bool,
    ) -> Result<Prepared, SfError> {
        let current = self.existing(store, object, id)?;
        let mut fields = self.normalize_body(store, object, body, false)?;
        self.object_rules(store, object, Some(current), &mut fields)?;
        if integration {
            self.order_activation(object, current, &fields)?;
        }
        Ok(Prepared {
            object: object.name,
            id: Some(current.id.clone()),
            fields,
        })
    }

    /// An order update by the integration user (an API request; a person's direct edit in
    /// the sandbox stands for an administrator, who has Edit Activated Orders).
    pub(super) fn order_activation(
        &self,
        object: &ObjectDef,
        current: &Record,
        fields: &Map<String, Value>,
    ) -> Result<(), SfError> {
        // Real behaviour (Salesforce Help, "Editing and Deletion Limitations for
        // Orders and Reduction Orders"; "Edit Activated Orders" permission): an order
        // is activated by its status alone, and an activated order's fields are
        // locked to a user without Edit Activated Orders (the integration user here).
        // The exact wording of Salesforce's messages is not published; these say
        // what the API refuses, with its FIELD_INTEGRITY_EXCEPTION code.
        if object.name == "Order" {
            let activated =
                |value: Option<&Value>| value.and_then(Value::as_str) == Some("Activated");
            let was_active = activated(current.fields.get("Status").as_ref());
            let activating = !was_active && activated(fields.get("Status"));
            let others: Vec<String> = fields
                .iter()
                .filter(|(name, value)| {
                    name.as_str() != "Status" && current.fields.get(name).as_ref() != Some(*value)
                })
                .map(|(name, _)| name.clone())
                .collect();
            if activating && !others.is_empty() {
                return Err(SfError::bad(
                    "FIELD_INTEGRITY_EXCEPTION",
                    format!(
                        "You can't activate an order and change other fields in the same update: update Status on its own (also changed: {})",
                        others.join(", ")
                    ),
                )
                .with_fields(vec!["Status".into()]));
            }
            // Taking an order back to Draft unlocks it; the simulator lets the same
            // update change other fields (not documented either way).
            let deactivating = was_active
                && fields
                    .get("Status")
                    .is_some_and(|status| !activated(Some(status)));
            if was_active && !deactivating && !others.is_empty() {
                return Err(SfError::bad(
                    "FIELD_INTEGRITY_EXCEPTION",
                    format!(
                        "You can't edit {} on an activated order without the Edit Activated Orders permission",
                        others.join(", ")
                    ),
                )
                .with_fields(others));
            }
        }
        Ok(())
    }

    pub(super) fn existing<'a>(
        &self,
        store: &'a Store,
        object: &ObjectDef,
        id: &str,
    ) -> Result<&'a Record, SfError> {
        let id = normalize_id(id)
            .filter(|id| id.starts_with(object.prefix))
            .ok_or_else(not_found)?;
        let record = store
            .entity(SYSTEM, object.name)
            .and_then(|records| records.get(&id))
            .ok_or_else(not_found)?;
        if !record.is_live() {
            return Err(entity_is_deleted());
        }
        Ok(record)
    }

    /// Object rules beyond field types.
    pub(super) fn object_rules(
        &self,
        store: &Store,
        object: &ObjectDef,
        current: Option<&Record>,
        fields: &mut Map<String, Value>,
    ) -> Result<(), SfError> {
        let merged = |name: &str| -> Option<Value> {
            fields
                .get(name)
                .cloned()
                .or_else(|| current.and_then(|record| record.fields.get(name)))
                .filter(|value| !value.is_null())
        };
        let integrity = |message: &str, field: &str| {
            SfError::bad(
                "FIELD_INTEGRITY_EXCEPTION",
                format!("field integrity exception: {message}"),
            )
            .with_fields(vec![field.to_string()])
        };
        match object.name {
            "Order" => {
                if let Some(status) = fields.get("Status").and_then(Value::as_str) {
                    if status != "Draft" && status != "Activated" {
                        return Err(SfError::bad(
                            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            format!("Status: bad value for restricted picklist field: {status}"),
                        )
                        .with_fields(vec!["Status".into()]));
                    }
                    if current.is_none() && status != "Draft" {
                        return Err(integrity(
                            "Status (new orders must have a Draft status)",
                            "Status",
                        ));
                    }
                }
            }
            "OrderItem" | "QuoteLineItem" if current.is_none() => {
                let (parent_field, parent_object) = if object.name == "OrderItem" {
                    ("OrderId", "Order")
                } else {
                    ("QuoteId", "Quote")
                };
                let parent = merged(parent_field)
                    .and_then(|id| id.as_str().map(str::to_string))
                    .and_then(|id| Self::find_live(store, parent_object, &id));
                let book = parent
                    .and_then(|parent| parent.fields.get_str("Pricebook2Id"))
                    .map(str::to_string);
                let entry = match merged("PricebookEntryId")
                    .and_then(|id| id.as_str().map(str::to_string))
                {
                    Some(entry_id) => Self::find_live(store, "PricebookEntry", &entry_id),
                    None => {
                        let product = merged("Product2Id");
                        store.entity(SYSTEM, "PricebookEntry").and_then(|entries| {
                            entries.records.values().find(|entry| {
                                entry.is_live()
                                    && entry.fields.get("Product2Id").as_ref() == product.as_ref()
                                    && entry.fields.get_str("Pricebook2Id") == book.as_deref()
                            })
                        })
                    }
                };
                let Some(entry) = entry else {
                    return Err(integrity(
                        "PricebookEntryId (no price book entry for this product)",
                        "PricebookEntryId",
                    ));
                };
                if book.is_none() || entry.fields.get_str("Pricebook2Id") != book.as_deref() {
                    return Err(integrity(
                        &format!(
                            "PricebookEntryId (pricebook entry is in a different pricebook than the one assigned to the {}, or {} has no pricebook assigned)",
                            parent_object, parent_object
                        ),
                        "PricebookEntryId",
                    ));
                }
                if let Some(product) = merged("Product2Id")
                    && entry.fields.get("Product2Id") != Some(product)
                {
                    return Err(integrity(
                        "Product2Id (does not match the price book entry)",
                        "Product2Id",
                    ));
                }
                fields.insert("PricebookEntryId".into(), json!(entry.id));
                fields.insert(
                    "Product2Id".into(),
                    entry.fields.get("Product2Id").unwrap_or(Value::Null),
                );
                if fields.get("ListPrice").is_none_or(Value::is_null) {
                    fields.insert(
                        "ListPrice".into(),
                        entry.fields.get("UnitPrice").unwrap_or(Value::Null),
                    );
                }
            }
            "PricebookEntry" if current.is_none() => {
                let book_id = merged("Pricebook2Id").and_then(|id| id.as_str().map(str::to_string));
                let product = merged("Product2Id");
                let standard = book_id
                    .as_deref()
                    .and_then(|id| Self::find_live(store, "Pricebook2", id))
                    .is_some_and(|book| book.fields.get("IsStandard") == Some(json!(true)));
                // Found through the Product2Id lookup, then compared exactly as before.
                let entries: Vec<&Record> = store
                    .entity(SYSTEM, "PricebookEntry")
                    .map(|entries| {
                        let candidates = match product.as_ref() {
                            Some(product) => entries
                                .lookup("Product2Id", product)
                                .unwrap_or_else(|| entries.records.values().collect()),
                            None => entries.records.values().collect(),
                        };
                        candidates
                            .into_iter()
                            .filter(|entry| {
                                entry.is_live()
                                    && entry.fields.get("Product2Id").as_ref() == product.as_ref()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if entries
                    .iter()
                    .any(|entry| entry.fields.get_str("Pricebook2Id") == book_id.as_deref())
                {
                    return Err(SfError::bad(
                        "DUPLICATE_VALUE",
                        "This price definition already exists in this price book",
                    ));
                }
                let has_standard = entries.iter().any(|entry| {
                    entry
                        .fields
                        .get_str("Pricebook2Id")
                        .and_then(|id| Self::find_live(store, "Pricebook2", id))
                        .is_some_and(|book| book.fields.get("IsStandard") == Some(json!(true)))
                });
                if !standard && !has_standard {
                    return Err(SfError::bad(
                        "STANDARD_PRICE_NOT_DEFINED",
                        "Before creating a custom price, create a standard price.",
                    ));
                }
            }
            "Quote"
                if current.is_none() && fields.get("Pricebook2Id").is_none_or(Value::is_null) =>
            {
                let book = merged("OpportunityId")
                    .and_then(|id| id.as_str().map(str::to_string))
                    .and_then(|id| Self::find_live(store, "Opportunity", &id))
                    .and_then(|opportunity| opportunity.fields.get("Pricebook2Id"));
                if let Some(book) = book {
                    fields.insert("Pricebook2Id".into(), book);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    }
}
