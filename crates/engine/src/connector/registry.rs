//! [`Connectors`]: one connector per system, built once from all system files and handed
//! out as the same `Arc` to every flow, so a system's rate limit, token cache and counters
//! are shared by everything that talks to it.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::connector::{Connector, ConnectorError, ConnectorStats, HttpConnector};
use crate::spec::system::SystemFile;

/// Every system's connector, by system name.
#[derive(Clone, Default)]
pub struct Connectors {
    by_system: IndexMap<String, Arc<dyn Connector>>,
}

/// The systems whose connectors could not be built, each with its reason.
#[derive(Debug, Clone)]
pub struct ConnectorsError(pub Vec<ConnectorError>);

impl fmt::Display for ConnectorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for ConnectorsError {}

impl fmt::Debug for Connectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_system.keys()).finish()
    }
}

impl Connectors {
    /// An empty registry.
    pub fn new() -> Connectors {
        Connectors::default()
    }

    /// Builds a generic connector for each system file, reading `${VAR}`s from the process
    /// environment. Every failure is reported, not only the first.
    pub fn from_systems<'a>(
        systems: impl IntoIterator<Item = &'a SystemFile>,
    ) -> Result<Connectors, ConnectorsError> {
        Self::from_systems_with(systems, &|name| std::env::var(name).ok())
    }

    /// Like [`Connectors::from_systems`], reading `${VAR}`s with `lookup`.
    pub fn from_systems_with<'a>(
        systems: impl IntoIterator<Item = &'a SystemFile>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Connectors, ConnectorsError> {
        let mut connectors = Connectors::new();
        let mut errors = Vec::new();
        for system in systems {
            match HttpConnector::with_env(system, lookup) {
                Ok(connector) => connectors.insert(Arc::new(connector)),
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok(connectors)
        } else {
            Err(ConnectorsError(errors))
        }
    }

    /// Adds (or replaces) a connector, such as one written in Rust, under its system name.
    pub fn insert(&mut self, connector: Arc<dyn Connector>) {
        self.by_system
            .insert(connector.system().to_owned(), connector);
    }

    /// The connector of a system; the same `Arc` every time.
    pub fn get(&self, system: &str) -> Option<Arc<dyn Connector>> {
        self.by_system.get(system).cloned()
    }

    /// The system names, in the order they were added.
    pub fn systems(&self) -> impl Iterator<Item = &str> {
        self.by_system.keys().map(String::as_str)
    }

    /// Starts a run on every system ([`Connector::start_run`]).
    pub fn start_run(&self) {
        for connector in self.by_system.values() {
            connector.start_run();
        }
    }

    /// Every system's counters.
    pub fn stats(&self) -> IndexMap<String, ConnectorStats> {
        self.by_system
            .iter()
            .map(|(name, connector)| (name.clone(), connector.stats()))
            .collect()
    }
}
