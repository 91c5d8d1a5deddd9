//! A system with one of its calls changed, for tests that make something happen at a
//! precise moment of a run (an edit between two reads, a record listed twice): every other
//! call goes to the real connector. [`World::engine_tapping`] builds an engine on the shipped
//! flows with one system tapped.

use std::sync::Arc;

use serde_json::Value;
use tether_engine::connector::{
    BoxFuture, Connector, ConnectorError, ConnectorStats, Connectors, Cursor, Deleted, EntityInfo,
    PageReader, Record, Written,
};
use tether_engine::spec::load::Project;
use tether_engine::store::Store;
use tether_engine::sync::engine::Engine;

use super::{World, flows};

/// Wraps the reader of an entity's changes.
type OnChanges = dyn Fn(&str, Box<dyn PageReader>) -> Box<dyn PageReader> + Send + Sync;
/// Runs before a record (entity, id) is read by id.
type BeforeGet =
    dyn for<'a> Fn(&'a str, &'a str) -> BoxFuture<'a, Result<(), ConnectorError>> + Send + Sync;

/// A connector whose changes or gets are tapped; the rest is `inner`'s.
pub(crate) struct Tapped {
    pub inner: Arc<dyn Connector>,
    pub changes: Option<Box<OnChanges>>,
    pub before_get: Option<Box<BeforeGet>>,
}

impl Tapped {
    pub(crate) fn new(inner: Arc<dyn Connector>) -> Tapped {
        Tapped {
            inner,
            changes: None,
            before_get: None,
        }
    }
}

impl Connector for Tapped {
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
        let reader = self.inner.changes(entity, cursor)?;
        Ok(match &self.changes {
            Some(tap) => tap(entity, reader),
            None => reader,
        })
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
            if let Some(tap) = &self.before_get {
                tap(entity, id).await?;
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

impl World {
    /// An engine on the shipped flows and this world's store and simulators, with
    /// `system`'s connector replaced by what `tap` makes of it.
    pub(crate) async fn engine_tapping(
        &self,
        system: &str,
        tap: impl FnOnce(Arc<dyn Connector>) -> Tapped,
    ) -> Engine {
        let env: std::collections::HashMap<String, String> =
            self.sandbox.env().into_iter().collect();
        let lookup = move |name: &str| env.get(name).cloned();
        let project = Project::load_dir(&flows());
        let (plans, _) = tether_engine::mapping::compile_project(&project);
        let systems: Vec<_> = project.systems.values().map(|s| s.spec.clone()).collect();
        let mut connectors =
            Connectors::from_systems_with(systems.iter(), &lookup).expect("connectors");
        let real = connectors.get(system).expect("the system has a connector");
        connectors.insert(Arc::new(tap(real)));
        let store = Store::open(&self.state).await.expect("store");
        Engine::new(&project, &plans, connectors, store).expect("engine")
    }
}
