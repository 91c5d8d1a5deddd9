//! A record an API lists twice in one read: the copy listed last is the record. An offset
//! listing whose records change while it is read can hand a record out on two pages, an
//! earlier state first; a listing read whole that lets go of records at rest page by page
//! must not keep the earlier copy and write it to the other side.

use std::sync::Arc;

use serde_json::{Value, json};
use tether_engine::connector::{
    BoxFuture, Connector, ConnectorError, ConnectorStats, Connectors, Cursor, Deleted, EntityInfo,
    Page, PageReader, Record, Written,
};
use tether_engine::spec::load::Project;
use tether_engine::store::Store;
use tether_engine::sync::engine::{Engine, RunOptions};

use super::{COMPANIES, flows, id_of, keap_company, world};

/// Keap, except that its company listing hands out an earlier state of one company just
/// before the company itself.
struct ListedTwice {
    inner: Arc<dyn Connector>,
    id: String,
    earlier: Value,
}

/// The listing of [`ListedTwice`].
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

impl Connector for ListedTwice {
    fn system(&self) -> &str {
        self.inner.system()
    }
    fn entity(&self, entity: &str) -> Option<EntityInfo> {
        self.inner.entity(entity)
    }
    fn changes(
        &self,
        entity: &str,
        cursor: Option<&Cursor>,
    ) -> Result<Box<dyn PageReader>, ConnectorError> {
        let inner = self.inner.changes(entity, cursor)?;
        if entity != "companies" {
            return Ok(inner);
        }
        Ok(Box::new(TwiceReader {
            inner,
            id: self.id.clone(),
            earlier: self.earlier.clone(),
        }))
    }
    fn list_all(&self, entity: &str) -> Result<Box<dyn PageReader>, ConnectorError> {
        self.inner.list_all(entity)
    }
    fn deletions(
        &self,
        entity: &str,
        cursor: Option<&Cursor>,
    ) -> Result<Box<dyn PageReader>, ConnectorError> {
        self.inner.deletions(entity, cursor)
    }
    fn get<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, ConnectorError>> {
        self.inner.get(entity, id)
    }
    fn create<'a>(
        &'a self,
        entity: &'a str,
        fields: Value,
    ) -> BoxFuture<'a, Result<Written, ConnectorError>> {
        self.inner.create(entity, fields)
    }
    fn update<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
        changes: Value,
    ) -> BoxFuture<'a, Result<Written, ConnectorError>> {
        self.inner.update(entity, id, changes)
    }
    fn delete<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Deleted, ConnectorError>> {
        self.inner.delete(entity, id)
    }
    fn stats(&self) -> ConnectorStats {
        self.inner.stats()
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

    let env: std::collections::HashMap<String, String> = w.sandbox.env().into_iter().collect();
    let lookup = move |name: &str| env.get(name).cloned();
    let project = Project::load_dir(&flows());
    let (plans, _) = tether_engine::mapping::compile_project(&project);
    let systems: Vec<_> = project.systems.values().map(|s| s.spec.clone()).collect();
    let mut connectors =
        Connectors::from_systems_with(systems.iter(), &lookup).expect("connectors");
    let keap = connectors.get("keap").expect("keap");
    connectors.insert(Arc::new(ListedTwice {
        inner: keap,
        id: id_of(&company),
        earlier: json!({ "company_name": "Fjord Frakt (old name)" }),
    }));
    let store = Store::open(&w.state).await.expect("store");
    let engine = Engine::new(&project, &plans, connectors, store).expect("engine");
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
