//! Optimistic checks before updates: a record someone edits while a run goes on (after the
//! run read it, before the run writes it) is not overwritten; the update waits for the next
//! read, where the three-way merge sees both edits and the conflict policy decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tether_engine::connector::{
    BoxFuture, Connector, ConnectorError, ConnectorStats, Connectors, Cursor, Deleted, EntityInfo,
    PageReader, Record, Written,
};
use tether_engine::spec::load::Project;
use tether_engine::store::Store;
use tether_engine::sync::engine::{Engine, RunOptions};

use super::{COMPANIES, flows, id_of, keap_company, world};

/// A connector that lets a person edit one record through the API the moment the engine
/// reads it again before updating it, as if the edit landed during the run. The run reads
/// the record once for the merge (the ERP side is read incrementally, so the counterpart of
/// a changed Keap company is fetched by id) and once more just before the update.
struct EditDuringRun {
    inner: Arc<dyn Connector>,
    gets: AtomicUsize,
    entity: String,
    id: String,
    edit: Value,
}

impl Connector for EditDuringRun {
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
        self.inner.changes(entity, cursor)
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
        Box::pin(async move {
            if entity == self.entity
                && id == self.id
                && self.gets.fetch_add(1, Ordering::SeqCst) == 1
            {
                self.inner.update(entity, id, self.edit.clone()).await?;
            }
            self.inner.get(entity, id).await
        })
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
async fn an_edit_made_during_a_run_is_merged_not_overwritten() {
    let w = world("optimistic", 0).await;
    let company = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Mid Run AS", "post@midrun.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    let customer = w.one("customerp", "customers", "email", "post@midrun.example");

    // Keap changes the website; while the run is under way, someone sets another one in the
    // ERP.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&company),
            json!({ "company_name": "Mid Run AS", "website": "https://keap-edit.example" }),
        )
        .expect("keap edit");
    let env: std::collections::HashMap<String, String> = w.sandbox.env().into_iter().collect();
    let lookup = move |name: &str| env.get(name).cloned();
    let project = Project::load_dir(&flows());
    let (plans, _) = tether_engine::mapping::compile_project(&project);
    let systems: Vec<_> = project.systems.values().map(|s| s.spec.clone()).collect();
    let mut connectors =
        Connectors::from_systems_with(systems.iter(), &lookup).expect("connectors");
    let erp = connectors.get("customerp").expect("customerp");
    connectors.insert(Arc::new(EditDuringRun {
        inner: erp,
        gets: AtomicUsize::new(0),
        entity: "customers".into(),
        id: id_of(&customer),
        edit: json!({ "website": "https://erp-edit.example" }),
    }));
    let store = Store::open(&w.state).await.expect("store");
    let engine = Engine::new(&project, &plans, connectors, store).expect("engine");
    let report = engine
        .run(&RunOptions {
            mappings: vec![COMPANIES.into()],
            max_passes: 1,
            ..RunOptions::default()
        })
        .await
        .expect("run");
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("report");
    assert_eq!(companies.deferred, 1, "{companies:#?}");
    assert_eq!(companies.updated_target, 0, "{companies:#?}");
    let customer = w.one("customerp", "customers", "email", "post@midrun.example");
    assert_eq!(
        customer["website"], "https://erp-edit.example",
        "the ERP edit made during the run is not overwritten"
    );

    // The next run sees both edits: the conflict policy decides, and the conflict is recorded.
    let report = w.run(&[COMPANIES]).await;
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("report");
    assert_eq!(companies.conflicts, 1, "{companies:#?}");
    let keap = w.one("keap", "companies", "email_address", "post@midrun.example");
    let customer = w.one("customerp", "customers", "email", "post@midrun.example");
    assert_eq!(
        keap["website"], customer["website"],
        "both sides agree after the merge"
    );
    assert_eq!(w.run(&[COMPANIES]).await.writes(), 0);
}
