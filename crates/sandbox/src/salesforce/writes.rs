//! Applying a [`Prepared`] write: derived fields (order status codes, line and quote totals),
//! roll-ups of lines into their order or quote, stamping and storing, and deletes that go to
//! the recycle bin with their children (`CASCADE`), refused while a line still uses the
//! record (`DELETE_FAILED`).

use serde_json::{Map, Value, json};

use crate::salesforce::describe::sf_id;
use crate::salesforce::rules::{Prepared, cents, money};
use crate::salesforce::{SYSTEM, Salesforce, SfError};
use crate::store::{Stamp, Store};

impl Salesforce {
    pub(super) fn derived(object: &str, fields: &mut Map<String, Value>) {
        match object {
            "Order" => {
                let status = fields
                    .get("Status")
                    .and_then(Value::as_str)
                    .unwrap_or("Draft");
                let code = if status == "Activated" {
                    "Activated"
                } else {
                    "Draft"
                };
                fields.insert("StatusCode".into(), json!(code));
            }
            "OrderItem" => {
                let quantity = fields
                    .get("Quantity")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let total = (quantity * cents(fields.get("UnitPrice")) as f64).round() as i64;
                fields.insert("TotalPrice".into(), money(total));
                fields.insert("AvailableQuantity".into(), json!(quantity));
            }
            "QuoteLineItem" => {
                let quantity = fields
                    .get("Quantity")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let subtotal = (quantity * cents(fields.get("UnitPrice")) as f64).round() as i64;
                let discount = fields
                    .get("Discount")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let total = (subtotal as f64 * (1.0 - discount / 100.0)).round() as i64;
                fields.insert("Subtotal".into(), money(subtotal));
                fields.insert("TotalPrice".into(), money(total));
            }
            "Quote" => {
                let subtotal = cents(fields.get("Subtotal"));
                let total = cents(fields.get("TotalPrice"));
                let grand =
                    total + cents(fields.get("Tax")) + cents(fields.get("ShippingHandling"));
                fields.insert("GrandTotal".into(), money(grand));
                let discount = if subtotal > 0 {
                    json!(((1.0 - total as f64 / subtotal as f64) * 10_000.0).round() / 100.0)
                } else {
                    Value::Null
                };
                fields.insert("Discount".into(), discount);
            }
            "Opportunity" => {
                let stage = fields
                    .get("StageName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let (probability, category) = match stage.as_str() {
                    "Prospecting" => (10, "Pipeline"),
                    "Qualification" => (10, "Pipeline"),
                    "Needs Analysis" => (20, "Pipeline"),
                    "Value Proposition" => (50, "Pipeline"),
                    "Id. Decision Makers" => (60, "Pipeline"),
                    "Perception Analysis" => (70, "Pipeline"),
                    "Proposal/Price Quote" => (75, "Pipeline"),
                    "Negotiation/Review" => (90, "Commit"),
                    "Closed Won" => (100, "Closed"),
                    "Closed Lost" => (0, "Omitted"),
                    _ => (10, "Pipeline"),
                };
                if fields.get("Probability").is_none_or(Value::is_null) {
                    fields.insert("Probability".into(), json!(probability));
                }
                let probability = fields
                    .get("Probability")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let expected =
                    (cents(fields.get("Amount")) as f64 * probability / 100.0).round() as i64;
                let expected = if fields.get("Amount").is_none_or(Value::is_null) {
                    Value::Null
                } else {
                    money(expected)
                };
                fields.insert("ExpectedRevenue".into(), expected);
                fields.insert("IsClosed".into(), json!(stage.starts_with("Closed")));
                fields.insert("IsWon".into(), json!(stage == "Closed Won"));
                fields.insert("ForecastCategory".into(), json!(category));
                if fields
                    .get("ForecastCategoryName")
                    .is_none_or(Value::is_null)
                {
                    fields.insert(
                        "ForecastCategoryName".into(),
                        json!(if category == "Closed" {
                            "Closed"
                        } else {
                            category
                        }),
                    );
                }
            }
            _ => {}
        }
    }

    /// Moves a parent's roll-up totals by a child's change.
    pub(super) fn roll_up(
        store: &mut Store,
        object: &str,
        fields: &Map<String, Value>,
        sign: i64,
        at: Stamp,
    ) {
        let (parent_object, parent_field) = match object {
            "OrderItem" => ("Order", "OrderId"),
            "QuoteLineItem" => ("Quote", "QuoteId"),
            _ => return,
        };
        let Some(parent_id) = fields
            .get(parent_field)
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        let parents = store.entity_mut(SYSTEM, parent_object);
        let Some(mut parent) = parents.get(&parent_id).cloned() else {
            return;
        };
        let mut totals = parent.fields.to_map();
        if object == "OrderItem" {
            let total = cents(totals.get("TotalAmount")) + sign * cents(fields.get("TotalPrice"));
            totals.insert("TotalAmount".into(), money(total));
        } else {
            let subtotal = cents(totals.get("Subtotal")) + sign * cents(fields.get("Subtotal"));
            let total = cents(totals.get("TotalPrice")) + sign * cents(fields.get("TotalPrice"));
            let count = totals
                .get("LineItemCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + sign;
            totals.insert("Subtotal".into(), money(subtotal));
            totals.insert("TotalPrice".into(), money(total));
            totals.insert("LineItemCount".into(), json!(count));
            Self::derived("Quote", &mut totals);
        }
        parent.fields = totals.into();
        parent.touched = parent.touched.max(at);
        parents.put(parent);
    }

    pub(super) fn apply(&self, store: &mut Store, prepared: Prepared, at: Stamp) -> String {
        let object = prepared.object;
        match prepared.id {
            Some(id) => {
                let Some(mut record) = store.entity_mut(SYSTEM, object).get(&id).cloned() else {
                    return id;
                };
                let before = record.fields.to_map();
                let mut after = before.clone();
                for (name, value) in prepared.fields {
                    after.insert(name, value);
                }
                Self::derived(object, &mut after);
                record.fields = (&after).into();
                record.modified = at;
                record.touched = at;
                store.entity_mut(SYSTEM, object).put(record);
                Self::roll_up(store, object, &before, -1, at);
                Self::roll_up(store, object, &after, 1, at);
                id
            }
            None => {
                let prefix = self
                    .object(object)
                    .map_or("000", |definition| definition.prefix);
                let id = sf_id(prefix, store.next_counter("salesforce.id"));
                let definition = self.object(object);
                let mut fields = prepared.fields;
                for field in definition
                    .map(|definition| definition.fields.as_slice())
                    .unwrap_or_default()
                {
                    if field.kind == "boolean" && !fields.contains_key(&field.name) {
                        fields.insert(field.name.clone(), json!(false));
                    }
                }
                if definition.is_some_and(|definition| definition.field("OwnerId").is_some()) {
                    fields
                        .entry("OwnerId")
                        .or_insert_with(|| json!(self.user_id));
                }
                let entity = store.entity_mut(SYSTEM, object);
                match object {
                    "Order" => {
                        let number = entity.allocate_number() + 99;
                        fields.insert("OrderNumber".into(), json!(format!("{number:08}")));
                        fields.insert("TotalAmount".into(), json!(0.0));
                    }
                    "OrderItem" => {
                        let number = entity.allocate_number();
                        fields.insert("OrderItemNumber".into(), json!(format!("{number:010}")));
                    }
                    "Quote" => {
                        let number = entity.allocate_number();
                        fields.insert("QuoteNumber".into(), json!(format!("{number:08}")));
                        fields.insert("Subtotal".into(), json!(0.0));
                        fields.insert("TotalPrice".into(), json!(0.0));
                        fields.insert("LineItemCount".into(), json!(0));
                        fields.insert("CanCreateQuoteLineItems".into(), json!(true));
                    }
                    "QuoteLineItem" => {
                        let number = entity.allocate_number();
                        fields.insert("LineNumber".into(), json!(format!("{number:08}")));
                    }
                    _ => {}
                }
                Self::derived(object, &mut fields);
                let record = entity.new_record(id.clone(), fields.clone(), at);
                entity.put(record);
                Self::roll_up(store, object, &fields, 1, at);
                store.observe(at);
                id
            }
        }
    }

    /// Children deleted with their parent, and references that block a delete.
    pub(super) fn delete_record(
        &self,
        store: &mut Store,
        object: &str,
        id: &str,
        at: Stamp,
    ) -> Result<(), SfError> {
        const CASCADE: [(&str, &str, &str); 7] = [
            ("Order", "OrderItem", "OrderId"),
            ("Quote", "QuoteLineItem", "QuoteId"),
            ("Opportunity", "Quote", "OpportunityId"),
            ("Account", "Contact", "AccountId"),
            ("Account", "Opportunity", "AccountId"),
            ("Product2", "PricebookEntry", "Product2Id"),
            ("Pricebook2", "PricebookEntry", "Pricebook2Id"),
        ];
        const BLOCKING: [(&str, &str, &str); 6] = [
            ("Product2", "OrderItem", "Product2Id"),
            ("Product2", "QuoteLineItem", "Product2Id"),
            ("PricebookEntry", "OrderItem", "PricebookEntryId"),
            ("PricebookEntry", "QuoteLineItem", "PricebookEntryId"),
            ("Account", "Order", "AccountId"),
            ("Pricebook2", "Order", "Pricebook2Id"),
        ];
        let referencing = |store: &Store, child: &str, field: &str| -> Vec<String> {
            store
                .entity(SYSTEM, child)
                .map(|children| {
                    children
                        .records
                        .values()
                        .filter(|record| {
                            record.is_live() && record.fields.get_str(field) == Some(id)
                        })
                        .map(|record| record.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        if object == "Pricebook2"
            && Self::find_live(store, object, id)
                .is_some_and(|book| book.fields.get("IsStandard") == Some(json!(true)))
        {
            return Err(SfError::bad(
                "DELETE_FAILED",
                "The standard price book cannot be deleted",
            ));
        }
        for (parent, child, field) in BLOCKING {
            if parent == object && !referencing(store, child, field).is_empty() {
                return Err(SfError::bad(
                    "DELETE_FAILED",
                    format!(
                        "Your attempt to delete this {object} could not be completed because it is associated with {child} records."
                    ),
                ));
            }
        }
        for (parent, child, field) in CASCADE {
            if parent == object {
                for child_id in referencing(store, child, field) {
                    self.delete_record(store, child, &child_id, at)?;
                }
            }
        }
        let fields = store
            .entity(SYSTEM, object)
            .and_then(|records| records.get(id))
            .map(|record| record.fields.to_map())
            .unwrap_or_default();
        store.entity_mut(SYSTEM, object).soft_delete(id, at);
        Self::roll_up(store, object, &fields, -1, at);
        Ok(())
    }
}
