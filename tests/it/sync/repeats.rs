//! A record an API lists twice in one read: the copy listed last is the record. An offset
//! listing whose records change while it is read can hand a record out on two pages, an
//! earlier state first; a listing read whole that lets go of records at rest page by page
//! must not keep the earlier copy and write it to the other side.

use serde_json::{Value, json};
use tether_engine::connector::{BoxFuture, ConnectorError, Page, PageReader};
use tether_engine::sync::engine::RunOptions;

use super::tapped::Tapped;
use super::{COMPANIES, id_of, keap_company, world};

/// A listing that hands out an earlier state of one record just before the record itself.
struct TwiceReader {
    inner: Box<dyn PageReader>,
    id: String,
    earlier: Value,
}

impl PageReader for TwiceReader {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>, ConnectorError>> {
        Box::pin(async move {
            let Some(mut page) = self.inner.next_page().await? else {
                return Ok(None);
            };
            if let Some(at) = page.records.iter().position(|r| r.id == self.id) {
                let mut earlier = page.records[at].clone();
                for (field, value) in self.earlier.as_object().into_iter().flatten() {
                    earlier.data[field] = value.clone();
                }
                page.records.insert(at, earlier);
            }
            Ok(Some(page))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_listed_twice_in_one_read_is_the_copy_listed_last() {
    let w = world("listed-twice", 0).await;
    let company = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Fjord Freight AS", "post@fjord.example"),
        )
        .expect("keap company");
    w.sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Hamar Hotell", "post@hamar.example"),
        )
        .expect("keap company");
    w.run(&[COMPANIES]).await;

    // Keap's company listing hands out an earlier state of the company just before it.
    let id = id_of(&company);
    let engine = w
        .engine_tapping("keap", |keap| Tapped {
            changes: Some(Box::new(move |entity, reader| {
                if entity != "companies" {
                    return reader;
                }
                Box::new(TwiceReader {
                    inner: reader,
                    id: id.clone(),
                    earlier: json!({ "company_name": "Fjord Frakt (old name)" }),
                })
            })),
            ..Tapped::new(keap)
        })
        .await;
    let report = engine
        .run(&RunOptions {
            mappings: vec![COMPANIES.into()],
            ..RunOptions::default()
        })
        .await
        .expect("run");

    // The company as last listed is at rest: nothing is written, the old name goes nowhere.
    assert_eq!(report.writes(), 0, "{report:#?}");
    let customer = w.one("customerp", "customers", "email", "post@fjord.example");
    assert_eq!(customer["name"], "Fjord Freight AS", "{report:#?}");
}
