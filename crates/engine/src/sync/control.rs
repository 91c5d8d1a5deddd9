//! Controls a caller holds over a run: a cancel flag (graceful shutdown stops a run after the
//! batch in flight) and mapping leases (several workers or overlapping `tether run`s on one
//! store, each identity synced by one of them at a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A flag that asks a run to stop at its next safe point: between mappings and between write
/// batches. A stopped mapping keeps its old cursors, so its records are read again next time;
/// what was written is recorded, so nothing is written twice.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every run holding this flag to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Each mapping of a run is held under a lease in the store for `worker`, one lease per
/// identity type (`identity:customer`), since mappings of one identity decide links to the
/// same global ids: a mapping whose lease another worker holds is skipped, and the lease is
/// renewed before every write batch, so a worker that lost its lease (it stalled past `ttl`
/// and another took over) stops writing.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// The worker's name, unique among the workers sharing the store.
    pub worker: String,
    /// How long a lease lasts without renewal; a killed worker's mappings are taken over
    /// after this.
    pub ttl: Duration,
}

impl LeaseOptions {
    /// The lease holder name of a one-off run (`tether run`) by this process on `host`:
    /// `run@HOST#PID`. Another run on the same host that finds a lease held under such a name
    /// by a process that no longer exists (killed, crashed) takes it over at once instead of
    /// waiting for it to expire.
    pub fn for_run(host: &str, ttl: Duration) -> LeaseOptions {
        LeaseOptions {
            worker: format!("run@{host}#{}", std::process::id()),
            ttl,
        }
    }
}

/// The host and process id of a one-off run's lease holder name (`run@HOST#PID`).
fn run_holder(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix("run@")?;
    let (host, pid) = rest.rsplit_once('#')?;
    Some((host, pid.parse().ok()?))
}

/// Whether a lease held by `holder` was left by a one-off run on this worker's own host
/// whose process is gone, judged by `alive` (a pure decision; the caller looks at the
/// processes). Holders on other hosts and long-running workers are left to their lease's
/// expiry.
pub fn left_by_dead_run(holder: &str, worker: &str, alive: impl Fn(u32) -> bool) -> bool {
    let (Some((their_host, pid)), Some((our_host, _))) = (run_holder(holder), run_holder(worker))
    else {
        return false;
    };
    their_host == our_host && holder != worker && !alive(pid)
}

/// Whether a process with this id exists on this machine (where the OS lets us see it).
pub fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_run_on_this_host_leaves_its_lease_to_take() {
        let ours = "run@box#200";
        assert!(left_by_dead_run("run@box#100", ours, |_| false));
        assert!(!left_by_dead_run("run@box#100", ours, |_| true), "alive");
        assert!(
            !left_by_dead_run("run@other#100", ours, |_| false),
            "another host"
        );
        assert!(
            !left_by_dead_run("box-100", ours, |_| false),
            "a server worker"
        );
        assert!(!left_by_dead_run("run@box#x", ours, |_| false), "not a pid");
        assert!(
            !left_by_dead_run("run@box#100", "box-200", |_| false),
            "we are a server"
        );
        assert!(!left_by_dead_run(ours, ours, |_| false), "our own");
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
    }
}
