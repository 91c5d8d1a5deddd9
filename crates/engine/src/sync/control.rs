//! Controls a long-running caller holds over a run: a cancel flag (graceful shutdown stops a
//! run after the batch in flight) and mapping leases (several workers on one store, each
//! mapping synced by one worker at a time).

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
