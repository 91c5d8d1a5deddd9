//! The order mappings run in: a mapping runs after the mappings its reference rules name, so
//! a contact's company is linked before the contact needs it. Pure.

use std::collections::{HashMap, HashSet};

/// Orders `nodes` (name, names it depends on) so that dependencies come first, keeping the
/// given order where there is no dependency. Self-references are ignored (the engine
/// handles them with later passes); a cycle, which `validate` reports, leaves its members in
/// their given order after everything else.
pub fn dependency_order(nodes: &[(String, Vec<String>)]) -> Vec<String> {
    let known: HashSet<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    let deps: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|(n, d)| {
            let d = d
                .iter()
                .map(String::as_str)
                .filter(|x| *x != n.as_str() && known.contains(x))
                .collect();
            (n.as_str(), d)
        })
        .collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut order: Vec<String> = Vec::with_capacity(nodes.len());
    loop {
        let mut progressed = false;
        for (name, _) in nodes {
            if done.contains(name.as_str()) {
                continue;
            }
            if deps[name.as_str()].iter().all(|d| done.contains(d)) {
                done.insert(name);
                order.push(name.clone());
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    order.extend(
        nodes
            .iter()
            .filter(|(n, _)| !done.contains(n.as_str()))
            .map(|(n, _)| n.clone()),
    );
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, deps: &[&str]) -> (String, Vec<String>) {
        (
            name.to_owned(),
            deps.iter().map(|d| (*d).to_owned()).collect(),
        )
    }

    #[test]
    fn dependencies_come_first_and_the_rest_keeps_its_order() {
        let nodes = [
            node("orders", &["customers", "products"]),
            node("contacts", &["customers", "contacts"]),
            node("customers", &[]),
            node("products", &[]),
        ];
        assert_eq!(
            dependency_order(&nodes),
            ["customers", "products", "orders", "contacts"]
        );
    }

    #[test]
    fn a_cycle_does_not_lose_mappings() {
        let nodes = [node("a", &["b"]), node("b", &["a"]), node("c", &[])];
        let order = dependency_order(&nodes);
        assert_eq!(order.len(), 3);
        assert_eq!(order[0], "c");
    }
}
