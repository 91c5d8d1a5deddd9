//! Opening an engine from a flows directory: load, validate, compile, connect, open the
//! store. Every command that runs flows (`run`, `plan`, `serve`) and the tests take this one
//! path, so they see the same project the same way.

use std::path::Path;

use crate::connector::{Connectors, ConnectorsError};
use crate::spec::load::Project;
use crate::spec::system::SystemFile;
use crate::store::{Store, StoreError, StoreUrl};
use crate::sync::engine::{Engine, EngineError};

/// Why an engine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the flows do not validate ({errors} errors; first: {first}); run `tether validate`")]
    Invalid { errors: usize, first: String },
    #[error(transparent)]
    Connectors(#[from] ConnectorsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How an engine is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Send requests as fast as the systems answer, ignoring the system files' rate limits
    /// (for the built-in simulators, which have none of their own when asked so).
    pub ignore_rate_limits: bool,
}

/// Loads and validates the flows under `flows`, compiles every mapping, builds a connector
/// per system (credentials read with `lookup`), and opens the store at `state`.
pub async fn open(
    flows: &Path,
    state: &StoreUrl,
    lookup: &dyn Fn(&str) -> Option<String>,
    options: OpenOptions,
) -> Result<Engine, OpenError> {
    let project = Project::load_dir(flows);
    open_project(&project, state, lookup, options).await
}

/// Like [`open`], for a project already loaded.
pub async fn open_project(
    project: &Project,
    state: &StoreUrl,
    lookup: &dyn Fn(&str) -> Option<String>,
    options: OpenOptions,
) -> Result<Engine, OpenError> {
    check(project)?;
    let store = Store::open(state).await?;
    build(project, store, lookup, options)
}

/// Builds an engine for a project already loaded, on a store already open (a server
/// reloading its flows keeps its store).
pub fn build(
    project: &Project,
    store: Store,
    lookup: &dyn Fn(&str) -> Option<String>,
    options: OpenOptions,
) -> Result<Engine, OpenError> {
    check(project)?;
    let (plans, _) = crate::mapping::compile_project(project);
    let connectors = Connectors::from_systems_with(systems(project, options).iter(), lookup)?;
    Ok(Engine::new(project, &plans, connectors, store)?)
}

fn systems(project: &Project, options: OpenOptions) -> Vec<SystemFile> {
    project
        .systems
        .values()
        .map(|s| {
            let mut system = s.spec.clone();
            if options.ignore_rate_limits {
                system.rate_limit = None;
            }
            system
        })
        .collect()
}

/// Refuses a project with errors, naming the first.
fn check(project: &Project) -> Result<(), OpenError> {
    let diagnostics = crate::validate::diagnostics(project);
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
    if let Some(first) = errors.first() {
        return Err(OpenError::Invalid {
            errors: errors.len(),
            first: format!(
                "{}:{}:{}: {}",
                first.path.display(),
                first.line,
                first.column,
                first.message
            ),
        });
    }
    Ok(())
}
