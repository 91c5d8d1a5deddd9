//! Opening an engine from a flows directory: load, check and compile once
//! ([`crate::validate::compile`]), connect, open the store. Every command that runs flows
//! (`run`, `plan`, `serve` and its reloads) and the tests take this one path, so they see the
//! same project the same way; the engine is built from the compiled project only.

use std::path::Path;
use std::sync::Arc;

use crate::connector::{Connectors, ConnectorsError};
use crate::spec::diagnostic::Diagnostic;
use crate::spec::load::Project;
use crate::spec::system::SystemFile;
use crate::store::{Store, StoreError, StoreUrl};
use crate::sync::engine::{Engine, EngineError};
use crate::validate::CompiledProject;

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
    /// (for the built-in simulators, which have none of their own when asked so), and
    /// list entities whole on every run whatever their `full_listing_every` says.
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
    let project = Arc::new(Project::load_dir(flows));
    let compiled = compile(&project)?;
    let store = Store::open(state).await?;
    build(&compiled, store, lookup, options)
}

/// Checks and compiles a loaded project ([`crate::validate::compile`]), refusing one with
/// errors and naming the first.
pub fn compile(project: &Arc<Project>) -> Result<CompiledProject, OpenError> {
    match crate::validate::compile(project) {
        Ok((compiled, _warnings)) => Ok(compiled),
        Err(diagnostics) => {
            let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
            let first = errors.first().map_or_else(String::new, |first| {
                format!(
                    "{}:{}:{}: {}",
                    first.path.display(),
                    first.line,
                    first.column,
                    first.message
                )
            });
            Err(OpenError::Invalid {
                errors: errors.len(),
                first,
            })
        }
    }
}

/// Builds an engine from a compiled project on a store already open (a server reloading its
/// flows keeps its store). Nothing is compiled here.
pub fn build(
    compiled: &CompiledProject,
    store: Store,
    lookup: &dyn Fn(&str) -> Option<String>,
    options: OpenOptions,
) -> Result<Engine, OpenError> {
    let project = compiled.project();
    let connectors = Connectors::from_systems_with(systems(project, options).iter(), lookup)?;
    Ok(Engine::new(
        project,
        compiled.mappings(),
        connectors,
        store,
    )?)
}

fn systems(project: &Project, options: OpenOptions) -> Vec<SystemFile> {
    project
        .systems
        .values()
        .map(|s| {
            let mut system = s.spec.clone();
            if options.ignore_rate_limits {
                system.rate_limit = None;
                // Full listings are spaced to save a daily quota; simulators have none.
                for entity in system.entities.values_mut() {
                    if let crate::spec::node::Checked::Valid(entity) = entity {
                        entity.full_listing_every = None;
                    }
                }
            }
            system
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::template;

    fn lookup(name: &str) -> Option<String> {
        Some(if name.ends_with("_URL") {
            "http://127.0.0.1:9".to_owned()
        } else {
            "secret".to_owned()
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_engine_is_built_from_the_compiled_project_without_compiling_again() {
        let flows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        let project = Arc::new(Project::load_dir(&flows));
        let compiled = compile(&project).expect("the shipped flows compile");
        let compiled_before = template::compiled_on_this_thread();
        let dir = std::env::temp_dir().join(format!("tether-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&StoreUrl::Sqlite(dir.join("state.db")))
            .await
            .expect("store opens");
        let engine =
            build(&compiled, store, &lookup, OpenOptions::default()).expect("engine builds");
        assert_eq!(template::compiled_on_this_thread(), compiled_before);
        assert_eq!(engine.mappings().len(), compiled.mappings().len());
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_project_with_errors_is_refused_naming_the_first() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/validate");
        let project = Arc::new(Project::load_paths(&dir, &[dir.join("unknown-field.yaml")]));
        let Err(OpenError::Invalid { errors, first }) = compile(&project) else {
            panic!("the project has errors");
        };
        assert_eq!(errors, 1);
        assert!(first.contains("unknown-field.yaml"), "{first}");
    }
}
