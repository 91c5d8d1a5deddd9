//! Coalescing of requested runs (`POST /runs`, change notifications): at most one run is
//! pending at a time, beside the one going on. A request whose mappings the pending run
//! already covers joins it; any other request widens it to cover both. So a loop of requests
//! makes at most one run going on and one pending, and everyone who waits for a report gets
//! the report of the run that covered their request. A request never joins the run going on:
//! that run may have read its sources before the change the request is about.
//!
//! The decisions are pure ([`Queue`] is generic over what a waiter is); the scheduler loop
//! takes the pending run when it is free.

use std::collections::BTreeSet;

use crate::serve::Scope;

/// The mappings a scope runs, by `flow/name`, resolved against the loaded flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cover {
    /// Every mapping (a request without `flow` or `mapping`).
    All,
    Mappings(BTreeSet<String>),
}

impl Cover {
    /// What `scope` runs among `mappings` (`(flow, name)`), as the engine selects: a mapping
    /// is in it when its flow is named (or none is) and it is named (or none is), by `name`
    /// or `flow/name`.
    pub fn of(scope: &Scope, mappings: &[(String, String)]) -> Cover {
        if scope.flows.is_empty() && scope.mappings.is_empty() {
            return Cover::All;
        }
        Cover::Mappings(
            mappings
                .iter()
                .filter(|(flow, _)| scope.flows.is_empty() || scope.flows.contains(flow))
                .filter(|(flow, name)| {
                    scope.mappings.is_empty()
                        || scope
                            .mappings
                            .iter()
                            .any(|m| m == name || *m == format!("{flow}/{name}"))
                })
                .map(|(flow, name)| format!("{flow}/{name}"))
                .collect(),
        )
    }

    /// Whether a run of `self` runs everything `other` asks for.
    pub fn covers(&self, other: &Cover) -> bool {
        match (self, other) {
            (Cover::All, _) => true,
            (Cover::Mappings(_), Cover::All) => false,
            (Cover::Mappings(mine), Cover::Mappings(theirs)) => theirs.is_subset(mine),
        }
    }

    fn union(&self, other: &Cover) -> Cover {
        match (self, other) {
            (Cover::All, _) | (_, Cover::All) => Cover::All,
            (Cover::Mappings(a), Cover::Mappings(b)) => Cover::Mappings(a | b),
        }
    }
}

/// The pending run: what it runs, why, and who waits for its report.
#[derive(Debug)]
pub struct Pending<W> {
    pub scope: Scope,
    pub cover: Cover,
    /// The trigger of the request that made it (`api`, `webhook`).
    pub trigger: &'static str,
    /// How many requests it stands for.
    pub requests: usize,
    pub waiters: Vec<W>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Nothing was pending: it is the pending run now.
    Queued,
    /// The pending run already covered it.
    Joined,
    /// The pending run was widened to cover it too.
    Widened,
}

impl Submitted {
    /// The label of `tether_run_requests_total{result=...}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Submitted::Queued => "queued",
            Submitted::Joined | Submitted::Widened => "joined",
        }
    }
}

/// At most one pending run.
#[derive(Debug)]
pub struct Queue<W> {
    pending: Option<Pending<W>>,
}

impl<W> Default for Queue<W> {
    fn default() -> Self {
        Queue { pending: None }
    }
}

impl<W> Queue<W> {
    /// Adds a request for `scope` (resolved to `cover`).
    pub fn submit(
        &mut self,
        scope: Scope,
        cover: Cover,
        trigger: &'static str,
        waiter: Option<W>,
    ) -> Submitted {
        let Some(pending) = &mut self.pending else {
            self.pending = Some(Pending {
                scope,
                cover,
                trigger,
                requests: 1,
                waiters: waiter.into_iter().collect(),
            });
            return Submitted::Queued;
        };
        pending.requests += 1;
        pending.waiters.extend(waiter);
        if pending.cover.covers(&cover) {
            return Submitted::Joined;
        }
        pending.scope = if cover.covers(&pending.cover) {
            scope
        } else {
            widen(&pending.scope, &pending.cover, &scope, &cover)
        };
        pending.cover = pending.cover.union(&cover);
        Submitted::Widened
    }

    /// The pending run, to start now.
    pub fn take(&mut self) -> Option<Pending<W>> {
        self.pending.take()
    }

    /// The pending run, to look at.
    pub fn pending(&self) -> Option<&Pending<W>> {
        self.pending.as_ref()
    }
}

/// One scope that runs both: flows when both name only flows, else the mappings by name.
fn widen(a: &Scope, a_cover: &Cover, b: &Scope, b_cover: &Cover) -> Scope {
    if a_cover == &Cover::All || b_cover == &Cover::All {
        return Scope::default();
    }
    let only_flows = |s: &Scope| s.mappings.is_empty() && !s.flows.is_empty();
    if only_flows(a) && only_flows(b) {
        let flows: BTreeSet<&String> = a.flows.iter().chain(&b.flows).collect();
        return Scope {
            flows: flows.into_iter().cloned().collect(),
            mappings: Vec::new(),
        };
    }
    match a_cover.union(b_cover) {
        Cover::All => Scope::default(),
        Cover::Mappings(names) => Scope {
            flows: Vec::new(),
            mappings: names.into_iter().collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mappings() -> Vec<(String, String)> {
        [
            ("crm", "companies"),
            ("crm", "contacts"),
            ("shop", "customers"),
            ("shop", "orders"),
        ]
        .iter()
        .map(|(f, n)| ((*f).to_owned(), (*n).to_owned()))
        .collect()
    }

    fn scope(flows: &[&str], names: &[&str]) -> Scope {
        Scope {
            flows: flows.iter().map(|s| (*s).to_owned()).collect(),
            mappings: names.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn submit(queue: &mut Queue<u32>, s: Scope, waiter: u32) -> Submitted {
        let cover = Cover::of(&s, &mappings());
        queue.submit(s, cover, "api", Some(waiter))
    }

    #[test]
    fn scopes_resolve_as_the_engine_selects() {
        let m = mappings();
        assert_eq!(Cover::of(&scope(&[], &[]), &m), Cover::All);
        let names = |c: Cover| match c {
            Cover::All => vec!["*".to_owned()],
            Cover::Mappings(n) => n.into_iter().collect(),
        };
        assert_eq!(
            names(Cover::of(&scope(&["crm"], &[]), &m)),
            ["crm/companies", "crm/contacts"]
        );
        assert_eq!(
            names(Cover::of(&scope(&[], &["orders", "crm/contacts"]), &m)),
            ["crm/contacts", "shop/orders"]
        );
        assert_eq!(
            names(Cover::of(&scope(&["crm"], &["orders"]), &m)),
            Vec::<String>::new(),
            "flows and mappings narrow each other"
        );
    }

    #[test]
    fn fifty_requests_for_everything_are_one_pending_run() {
        let mut queue = Queue::default();
        assert_eq!(submit(&mut queue, scope(&[], &[]), 0), Submitted::Queued);
        for i in 1..50 {
            assert_eq!(submit(&mut queue, scope(&[], &[]), i), Submitted::Joined);
        }
        let pending = queue.take().expect("pending");
        assert_eq!(pending.requests, 50);
        assert_eq!(pending.waiters.len(), 50);
        assert_eq!(pending.scope, Scope::default());
        assert!(queue.take().is_none(), "taken: nothing pending");
        // A request after the run started is pending again: it never joins the run going on.
        assert_eq!(submit(&mut queue, scope(&[], &[]), 50), Submitted::Queued);
    }

    #[test]
    fn a_covered_request_joins_and_a_wider_one_widens() {
        let mut queue = Queue::default();
        assert_eq!(
            submit(&mut queue, scope(&["crm"], &[]), 1),
            Submitted::Queued
        );
        assert_eq!(
            submit(&mut queue, scope(&[], &["companies"]), 2),
            Submitted::Joined,
            "a mapping of a pending flow"
        );
        assert_eq!(
            submit(&mut queue, scope(&["shop"], &[]), 3),
            Submitted::Widened
        );
        let pending = queue.pending().expect("pending");
        assert_eq!(
            pending.scope,
            scope(&["crm", "shop"], &[]),
            "flows stay flows"
        );
        assert_eq!(
            submit(&mut queue, scope(&[], &["orders"]), 4),
            Submitted::Joined
        );
        assert_eq!(submit(&mut queue, scope(&[], &[]), 5), Submitted::Widened);
        let pending = queue.take().expect("pending");
        assert_eq!(pending.scope, Scope::default(), "everything");
        assert_eq!(pending.cover, Cover::All);
        assert_eq!(pending.waiters, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn mappings_of_different_flows_widen_to_their_union() {
        let mut queue = Queue::default();
        submit(&mut queue, scope(&[], &["companies"]), 1);
        assert_eq!(
            submit(&mut queue, scope(&["shop"], &[]), 2),
            Submitted::Widened
        );
        let pending = queue.take().expect("pending");
        assert_eq!(
            pending.scope,
            scope(&[], &["crm/companies", "shop/customers", "shop/orders"])
        );
        // The widened scope selects exactly the union.
        assert_eq!(Cover::of(&pending.scope, &mappings()), pending.cover);
    }

    #[test]
    fn a_wider_request_replaces_the_scope() {
        let mut queue = Queue::default();
        submit(&mut queue, scope(&[], &["companies"]), 1);
        assert_eq!(
            submit(&mut queue, scope(&["crm"], &[]), 2),
            Submitted::Widened
        );
        assert_eq!(queue.take().expect("pending").scope, scope(&["crm"], &[]));
    }
}
