//! Keap lists: `limit`/`offset` paging with `count`, `next` and `previous` URLs, each
//! entity's filters (`since`/`until` on contacts, names, email, stage, user, `active`) and
//! ordering, and the `GET /products/sync` change feed with its sync token.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::{ApiRequest, ApiResponse, encode_query};
use crate::keap::render::Text;
use crate::keap::{BASE_PATH, Keap, MAX_LIMIT, bad_request};
use crate::store::{
    ChangeKind, EntityStore, Listing, Record, Sort, Stamp, Store, parse_lenient_datetime,
};

/// The parameters besides `limit` and `offset` that Keap's `next` and `previous` links
/// carry over from the request (see [`Keap::page_links`]).
const LINK_KEEPS: [&str; 3] = ["since", "until", "order"];

/// The list filters besides `since`/`until`; a list with one of them is scanned.
const LIST_FILTERS: [&str; 7] = [
    "company_name",
    "email",
    "given_name",
    "family_name",
    "stage_id",
    "user_id",
    "active",
];

impl Keap {
    pub(super) fn paging(request: &ApiRequest) -> Result<(i64, i64), ApiResponse> {
        let number = |name: &str| -> Result<Option<i64>, ApiResponse> {
            match request.query(name) {
                None | Some("") => Ok(None),
                Some(text) => text
                    .trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| bad_request(format!("Invalid value for parameter '{name}'"))),
            }
        };
        let limit = match number("limit")? {
            None | Some(0) => MAX_LIMIT,
            Some(limit) if limit < 0 => {
                return Err(bad_request("Invalid value for parameter 'limit'"));
            }
            Some(limit) => limit.min(MAX_LIMIT),
        };
        let offset = number("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(bad_request("Invalid value for parameter 'offset'"));
        }
        Ok((limit, offset))
    }

    /// `next`/`previous` for a list: `limit` and `offset` moved, and of the request's other
    /// parameters only those the links are seen to keep ([`LINK_KEEPS`]).
    ///
    /// Real behaviour: Keap builds these links from a few parameters only. The link
    /// observed on the v1 API (`contracts/keap.md`, "v1 list envelope example":
    /// `…/contacts/?limit=2&offset=2&since=…&order=id`) keeps `limit`, `offset`, `since`
    /// and `order`, and drops `optional_properties` (so a client that follows it gets
    /// contacts without `job_title`), `order_direction` and the filters. Which others it
    /// keeps is not documented, so the stricter choice is made: `until` besides those, and
    /// nothing else.
    pub(super) fn page_links(
        &self,
        path: &str,
        request: &ApiRequest,
        limit: i64,
        offset: i64,
    ) -> (String, String) {
        let rest: Vec<(String, String)> = request
            .query
            .iter()
            .filter(|(key, _)| LINK_KEEPS.contains(&key.as_str()))
            .cloned()
            .collect();
        let link = |offset: i64| {
            let mut pairs = vec![
                ("limit".to_string(), limit.to_string()),
                ("offset".to_string(), offset.to_string()),
            ];
            pairs.extend(rest.iter().cloned());
            format!("{}{BASE_PATH}/{path}/?{}", self.root, encode_query(&pairs))
        };
        (
            link(offset.saturating_add(limit)),
            link((offset - limit).max(0)),
        )
    }

    pub(super) fn list(&self, entity: &str, request: &ApiRequest) -> ApiResponse {
        match self.try_list(entity, request) {
            Ok((response, summary)) => {
                if entity == "contacts" {
                    self.edit_after_page(summary);
                }
                response
            }
            Err(response) => response,
        }
    }

    /// A person's edit between two page reads ([`crate::Sandbox::edit_between_pages`]):
    /// the first contact of a page that has more after it is edited and moves to the end
    /// of a list ordered by `last_updated`.
    ///
    /// Real behaviour: Keap v1 lists are offset pages over the list as it is at each
    /// request (Keap REST v1 reference, `GET /contacts`: `limit`, `offset`, `order`,
    /// `since`), so such an edit moves every later contact one place up and the next page
    /// starts one contact too late.
    fn edit_after_page(&self, summary: PageSummary) {
        use std::sync::atomic::Ordering;
        let Some(id) = summary.first_id else {
            return;
        };
        if summary.next_offset >= summary.count
            || self
                .edits_between_pages
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_err()
        {
            return;
        }
        let mut store = self.shared.store();
        let Some(mut record) = Self::find(&store, "contacts", &id.to_string()).cloned() else {
            return;
        };
        let title = record
            .fields
            .get_str("job_title")
            .unwrap_or_default()
            .to_owned();
        record.fields.insert(
            "job_title".to_string(),
            json!(format!("{title} (edited during a read)")),
        );
        let at = self.shared.stamp(&mut store);
        record.modified = at;
        record.touched = at;
        store.entity_mut(super::SYSTEM, "contacts").put(record);
    }

    pub(super) fn try_list(
        &self,
        entity: &str,
        request: &ApiRequest,
    ) -> Result<(ApiResponse, PageSummary), ApiResponse> {
        let (limit, offset) = Self::paging(request)?;
        let instant = |name: &str| -> Result<Option<Stamp>, ApiResponse> {
            match request.query(name) {
                None | Some("") => Ok(None),
                Some(text) => parse_lenient_datetime(text).map(Some).ok_or_else(|| {
                    bad_request(format!("Invalid date format for '{name}': {text}"))
                }),
            }
        };
        let (since, until) = if entity == "contacts" {
            (instant("since")?, instant("until")?)
        } else {
            (None, None)
        };
        let order = request.query("order").unwrap_or("id");
        let allowed: &[&str] = match entity {
            "companies" => &["id", "date_created", "name", "email"],
            "contacts" => &[
                "id",
                "date_created",
                "last_updated",
                "name",
                "firstName",
                "email",
            ],
            "opportunities" => &[
                "next_action",
                "opportunity_name",
                "contact_name",
                "date_created",
                "id",
            ],
            _ => &["id"],
        };
        if !allowed.contains(&order) {
            return Err(bad_request(format!("Invalid order field '{order}'")));
        }
        let descending = match request.query("order_direction") {
            None | Some("ASCENDING") => false,
            Some("DESCENDING") => true,
            Some(other) => return Err(bad_request(format!("Invalid order direction '{other}'"))),
        };
        let optional = Self::optional_properties(request);
        let store = self.shared.store();
        let Some(entity_store) = Self::entity_store(&store, entity) else {
            let summary = PageSummary::of(&[], 0, limit, offset);
            let body = Page::Values(Vec::new());
            return Ok((
                self.list_body(entity, body, 0, request, limit, offset, None),
                summary,
            ));
        };
        // Served from an index when nothing but the order and (for `last_updated`) the
        // modified-time window narrows the list; scanned and sorted otherwise.
        let filtered = LIST_FILTERS
            .iter()
            .any(|name| request.query(name).is_some());
        let sort = match order {
            "id" => Some(Sort::NumericId),
            "date_created" => Some(Sort::Created),
            "last_updated" => Some(Sort::Modified),
            _ => None,
        };
        let records = match sort {
            Some(sort)
                if !filtered
                    && (sort == Sort::Modified || (since.is_none() && until.is_none())) =>
            {
                Listing::range(entity_store, sort, false, since, until, descending)
            }
            _ => Listing::Scanned(self.scan(
                entity_store,
                &store,
                entity,
                request,
                order,
                since,
                until,
                descending,
            )),
        };
        let total = records.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(limit).unwrap_or(0));
        let records = records.slice(start, end);
        let summary = PageSummary::of(&records, total, limit, offset);
        // Companies and contacts are written out straight from their stored fields.
        let texts: Option<Vec<Text<'_>>> = records
            .iter()
            .map(|record| Self::text(&store, entity, record, &optional, false, false))
            .collect();
        let page = match texts {
            Some(texts) => Page::Texts(texts),
            None => Page::Values(
                records
                    .into_iter()
                    .map(|record| match entity {
                        "products" => Self::render_product(record, true),
                        _ => Self::render(&store, entity, record, &optional, false),
                    })
                    .collect(),
            ),
        };
        let sync_token = (entity == "products").then(|| entity_store.next_change.to_string());
        Ok((
            self.list_body(entity, page, total, request, limit, offset, sync_token),
            summary,
        ))
    }

    /// The records of a list the indexes cannot serve: filtered and sorted by a scan.
    #[allow(clippy::too_many_arguments)]
    fn scan<'a>(
        &self,
        entity_store: &'a EntityStore,
        store: &'a Store,
        entity: &str,
        request: &ApiRequest,
        order: &str,
        since: Option<Stamp>,
        until: Option<Stamp>,
        descending: bool,
    ) -> Vec<&'a Record> {
        let text = |record: &Record, name: &str| -> String {
            record
                .fields
                .get_str(name)
                .unwrap_or_default()
                .to_lowercase()
        };
        let first_email = |record: &Record| -> String {
            record
                .fields
                .get("email_addresses")
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|emails| emails.first())
                .and_then(|email| email.get("email"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase()
        };
        let mut records: Vec<&'a Record> = entity_store
            .records
            .values()
            .filter(|record| record.is_live())
            .filter(|record| since.is_none_or(|since| record.modified >= since))
            .filter(|record| until.is_none_or(|until| record.modified <= until))
            .filter(|record| match entity {
                "companies" => request
                    .query("company_name")
                    .is_none_or(|name| text(record, "company_name") == name.to_lowercase()),
                "contacts" => {
                    request.query("email").is_none_or(|email| {
                        record
                            .fields
                            .get("email_addresses")
                            .as_ref()
                            .and_then(Value::as_array)
                            .is_some_and(|emails| {
                                emails.iter().any(|entry| {
                                    entry
                                        .get("email")
                                        .and_then(Value::as_str)
                                        .is_some_and(|address| address.eq_ignore_ascii_case(email))
                                })
                            })
                    }) && request
                        .query("given_name")
                        .is_none_or(|name| text(record, "given_name") == name.to_lowercase())
                        && request
                            .query("family_name")
                            .is_none_or(|name| text(record, "family_name") == name.to_lowercase())
                }
                "opportunities" => {
                    request.query("stage_id").is_none_or(|stage| {
                        record
                            .fields
                            .get("stage")
                            .as_ref()
                            .and_then(|value| value.get("id"))
                            .map(Value::to_string)
                            == Some(stage.to_string())
                    }) && request.query("user_id").is_none_or(|user| {
                        record
                            .fields
                            .get("user")
                            .as_ref()
                            .and_then(|value| value.get("id"))
                            .map(Value::to_string)
                            == Some(user.to_string())
                    })
                }
                _ => match request.query("active") {
                    None => true,
                    Some(active) => {
                        record
                            .fields
                            .get("active")
                            .as_ref()
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                            == (active == "true")
                    }
                },
            })
            .collect();
        let numeric_id = |record: &Record| record.id.parse::<u64>().unwrap_or_default();
        match order {
            "date_created" => records.sort_by_key(|record| (record.created, record.seq)),
            "last_updated" => records.sort_by_key(|record| (record.modified, record.seq)),
            "name" if entity == "companies" => {
                records.sort_by_key(|record| text(record, "company_name"))
            }
            "name" => records
                .sort_by_key(|record| (text(record, "family_name"), text(record, "given_name"))),
            "firstName" => records.sort_by_key(|record| text(record, "given_name")),
            "email" if entity == "companies" => {
                records.sort_by_key(|record| text(record, "email_address"))
            }
            "email" => records.sort_by_key(|record| first_email(record)),
            "opportunity_name" => records.sort_by_key(|record| text(record, "opportunity_title")),
            "next_action" => records.sort_by_key(|record| text(record, "next_action_date")),
            "contact_name" => records.sort_by_key(|record| {
                record
                    .fields
                    .get("contact")
                    .as_ref()
                    .and_then(|contact| contact.get("id"))
                    .and_then(Value::as_u64)
                    .and_then(|id| Self::find(store, "contacts", &id.to_string()))
                    .map(|contact| text(contact, "family_name"))
                    .unwrap_or_default()
            }),
            _ => records.sort_by_key(|record| numeric_id(record)),
        }
        if descending {
            records.reverse();
        }
        records
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn list_body(
        &self,
        entity: &str,
        page: Page<'_>,
        total: usize,
        request: &ApiRequest,
        limit: i64,
        offset: i64,
        sync_token: Option<String>,
    ) -> ApiResponse {
        let (next, previous) = self.page_links(entity, request, limit, offset);
        let body = ListBody {
            entity,
            page,
            count: total,
            next,
            previous,
            sync_token,
        };
        match serde_json::to_vec(&body) {
            Ok(text) => ApiResponse::json_text(StatusCode::OK, text),
            Err(source) => ApiResponse::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": format!("a stored record cannot be rendered: {source}")}),
            ),
        }
    }

    /// `GET /products/sync`: what changed since the token (everything without one), one
    /// entry per product with its latest status, and a token for the next call. Deleted
    /// products are left out.
    ///
    /// Real behaviour: the official v1 OpenAPI describes the endpoint as returning "a set
    /// of products that have been updated or created since the last result set was
    /// retrieved, minus any products that have been deleted", while its status enum also
    /// lists `DELETED`. Which deletions, if any, come as `DELETED` (one made through the
    /// API, in Keap's own screens, before a token grew old) is not documented, so the
    /// stricter reading is taken: no deletion appears in the feed, and a product deleted
    /// after it changed is left out too. A client finds deletions by listing the products.
    pub(super) fn product_sync(&self, request: &ApiRequest) -> ApiResponse {
        let (limit, offset) = match Self::paging(request) {
            Ok(paging) => paging,
            Err(response) => return response,
        };
        let store = self.shared.store();
        let head =
            Self::entity_store(&store, "products").map_or(0, |products| products.next_change);
        let since = match request.query("sync_token") {
            None | Some("") => 0,
            Some(token) => match token.parse::<u64>() {
                Ok(seq) if seq <= head => seq,
                _ => return bad_request(format!("Invalid sync token: {token}")),
            },
        };
        let mut statuses: Vec<(String, ChangeKind, bool)> = Vec::new();
        if let Some(products) = Self::entity_store(&store, "products") {
            // The change log is in sequence order, so the changes after the token are a
            // suffix of it, found by binary search; each product's entry by a map.
            let from = products
                .changes
                .partition_point(|change| change.seq <= since);
            let mut positions: std::collections::HashMap<&str, usize> =
                std::collections::HashMap::new();
            for change in &products.changes[from..] {
                match positions.get(change.id.as_str()) {
                    Some(&position) => statuses[position].1 = change.kind,
                    None => {
                        positions.insert(change.id.as_str(), statuses.len());
                        statuses.push((
                            change.id.clone(),
                            change.kind,
                            change.kind == ChangeKind::Created,
                        ));
                    }
                }
            }
        }
        statuses.retain(|(_, kind, _)| *kind != ChangeKind::Deleted);
        let entries: Vec<Value> = statuses
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|(id, _, created)| {
                let status = if *created { "CREATED" } else { "UPDATED" };
                let product = Self::entity_store(&store, "products")
                    .and_then(|products| products.get(id))
                    .map(|record| Self::render_product(record, true))
                    .unwrap_or_else(|| json!({"id": id.parse::<u64>().unwrap_or_default()}));
                json!({"product": product, "status": status})
            })
            .collect();
        let (next, previous) = self.page_links("products/sync", request, limit, offset);
        ApiResponse::json(
            StatusCode::OK,
            json!({
                "product_statuses": entries,
                "sync_token": head.to_string(),
                "count": statuses.len(),
                "next": next,
                "previous": previous,
            }),
        )
    }
}

/// What a person's edit between two pages needs to know of a contact page
/// ([`Keap::edit_after_page`]): the matches, the first contact's id, and where the `next`
/// link starts.
pub(super) struct PageSummary {
    count: u64,
    first_id: Option<u64>,
    next_offset: u64,
}

impl PageSummary {
    fn of(page: &[&Record], count: usize, limit: i64, offset: i64) -> Self {
        Self {
            count: count as u64,
            first_id: page
                .first()
                .map(|record| record.id.parse::<u64>().unwrap_or_default()),
            next_offset: u64::try_from(offset.saturating_add(limit)).unwrap_or(u64::MAX),
        }
    }
}

/// A list page's records: written out straight from the store, or rendered as values.
pub(super) enum Page<'a> {
    Texts(Vec<Text<'a>>),
    Values(Vec<Value>),
}

impl serde::Serialize for Page<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Page::Texts(texts) => serializer.collect_seq(texts),
            Page::Values(values) => serializer.collect_seq(values),
        }
    }
}

/// A list's answer: the page under the entity's name, `count`, `next`, `previous` and, for
/// products, the `sync_token`.
struct ListBody<'a> {
    entity: &'a str,
    page: Page<'a>,
    count: usize,
    next: String,
    previous: String,
    sync_token: Option<String>,
}

impl serde::Serialize for ListBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(self.entity, &self.page)?;
        map.serialize_entry("count", &self.count)?;
        map.serialize_entry("next", &self.next)?;
        map.serialize_entry("previous", &self.previous)?;
        if let Some(token) = &self.sync_token {
            map.serialize_entry("sync_token", token)?;
        }
        map.end()
    }
}
