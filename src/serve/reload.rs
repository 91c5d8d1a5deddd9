//! Loading the flows folder into a runnable [`Loaded`] (checked and compiled once, as `tether
//! validate` does, then the engine built from that compiled project), and watching the folder
//! for changes. A replaced [`Loaded`] takes its compiled mappings and templates with it.
//!
//! Watching uses `notify` (inotify on Linux, FSEvents, ReadDirectoryChangesW). Editors save
//! in bursts (a temporary file, a rename, a chmod), so events are debounced: a reload
//! happens once the folder has been quiet for [`QUIET`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::serve::{ServeError, ServeOptions};
use tether_engine::spec::load::Project;
use tether_engine::store::Store;
use tether_engine::sync::engine::Engine;
use tether_engine::sync::open::{self, OpenError};
use tether_engine::validate::CompiledProject;

/// How long the flows folder must be quiet before a change is loaded.
pub const QUIET: Duration = Duration::from_millis(300);

/// A validated flows folder and the engine built from it.
pub struct Loaded {
    pub project: Arc<Project>,
    pub engine: Engine,
    /// Every flow with its interval.
    pub flows: Vec<(String, Duration)>,
}

/// Why a folder was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files do not validate: every error as `path:line:col: error[code]: message`.
    #[error("the flows do not validate ({} errors)", .0.len())]
    Invalid(Vec<String>),
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// Loads, checks and compiles the flows folder and builds its engine on `store`.
pub fn load(options: &ServeOptions, store: Store) -> Result<Loaded, ReloadError> {
    let project = Arc::new(Project::load_dir(&options.flows));
    let diagnostics = match tether_engine::validate::compile(&project) {
        Ok((compiled, _warnings)) => return build(options, store, &compiled),
        Err(diagnostics) => diagnostics,
    };
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            format!(
                "{}:{}:{}: error[{}]: {}",
                d.path.display(),
                d.line,
                d.column,
                d.code,
                d.message
            )
        })
        .collect();
    Err(ReloadError::Invalid(errors))
}

/// Builds the engine of a compiled project.
fn build(
    options: &ServeOptions,
    store: Store,
    compiled: &CompiledProject,
) -> Result<Loaded, ReloadError> {
    let lookup = options.lookup.clone();
    let engine = open::build(compiled, store, &move |name| lookup(name), options.open)?;
    let project = Arc::clone(compiled.project());
    let flows = project
        .flows
        .iter()
        .map(|f| (f.spec.flow.value.clone(), f.spec.interval()))
        .collect();
    Ok(Loaded {
        project,
        engine,
        flows,
    })
}

/// Whether a changed path can change the project (YAML files; not editor swap files).
fn relevant(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) && !path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Watches `dir` (and `systems/` under it) and sends `()` on `reloads` once a burst of
/// changes to YAML files is over. The watcher stops when the returned handle is dropped.
pub fn watch(
    dir: &Path,
    reloads: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, ServeError> {
    let (events_tx, mut events) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for path in event.paths {
                    if relevant(&path) {
                        let _ = events_tx.send(path);
                    }
                }
            }
            Err(error) => warn!(%error, "watching the flows folder"),
        })
        .map_err(|e| ServeError::Watch {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|e| ServeError::Watch {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    tokio::spawn(async move {
        while let Some(first) = events.recv().await {
            debug!(path = %first.display(), "flow file changed");
            // Wait until the burst is over.
            loop {
                match tokio::time::timeout(QUIET, events.recv()).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // A full channel already holds a reload that will see this change too.
            if let Err(mpsc::error::TrySendError::Closed(())) = reloads.try_send(()) {
                return;
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_engine::mapping::template;
    use tether_engine::store::StoreUrl;
    use tether_engine::sync::open::OpenOptions;

    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_compiles_each_template_once_and_a_replaced_version_frees_them() {
        let flows = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
        let dir = std::env::temp_dir().join(format!("tether-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let options = ServeOptions {
            flows: flows.clone(),
            state: StoreUrl::Sqlite(dir.join("state.db")),
            listen: "127.0.0.1:0".parse().expect("address"),
            worker: "test".into(),
            lease_ttl: Duration::from_secs(30),
            history_days: 30,
            watch: false,
            admin_token: None,
            runs_per_second: 2.0,
            runs_burst: 10,
            alerts: crate::serve::alerts::AlertOptions::default(),
            open: OpenOptions::default(),
            lookup: Arc::new(|name: &str| {
                Some(if name.ends_with("_URL") {
                    "http://127.0.0.1:9".to_owned()
                } else {
                    "secret".to_owned()
                })
            }),
        };
        let store = Store::open(&options.state).await.expect("store opens");
        // Compiling every mapping once, by itself, is the reference.
        let before = template::compiled_on_this_thread();
        let (mappings, _) = tether_engine::mapping::compile_project(&Project::load_dir(&flows));
        let templates = template::compiled_on_this_thread() - before;
        drop(mappings);
        assert!(
            templates > 20,
            "the shipped flows have templates: {templates}"
        );

        let live = template::live_on_this_thread();
        let before = template::compiled_on_this_thread();
        let first = load(&options, store.clone()).expect("the shipped flows load");
        assert_eq!(template::compiled_on_this_thread() - before, templates);
        let second = load(&options, store.clone()).expect("the shipped flows load");
        assert_eq!(template::compiled_on_this_thread() - before, 2 * templates);
        assert_eq!(
            template::live_on_this_thread(),
            live + 2 * templates as isize
        );
        // The running version is replaced: its templates go with it.
        drop(first);
        assert_eq!(template::live_on_this_thread(), live + templates as isize);
        drop(second);
        assert_eq!(template::live_on_this_thread(), live);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_yaml_files_trigger_reloads() {
        assert!(relevant(Path::new("flows/keap-to-customerp.yaml")));
        assert!(relevant(Path::new("flows/systems/keap.yml")));
        assert!(!relevant(Path::new("flows/keap-to-customerp.yaml.swp")));
        assert!(!relevant(Path::new("flows/.keap-to-customerp.yaml")));
        assert!(!relevant(Path::new("flows/notes.txt")));
    }
}
