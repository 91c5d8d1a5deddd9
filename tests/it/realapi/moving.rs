//! Keap contacts that move during an offset-paged read: Keap lists contacts by
//! `last_updated` in offset pages over the list as it is at each request, so a contact
//! edited between two page reads moves to the end and the next page starts one contact too
//! late. The simulator does the same (and can make a person edit a contact between two
//! pages); the connector pages by `last_updated` instead of the offset, so no contact and
//! no edit is lost, and a full listing takes no contact for deleted.

use std::collections::HashSet;

use serde_json::{Value, json};
use tether_engine::connector::Connector;
use tether_sandbox::credentials;

use super::{KEAP_CONTACTS, World, read_all, shipped_connector};

const EDITED: &str = " (edited during a read)";

fn contacts(w: &World, count: usize, domain: &str) -> Vec<String> {
    (0..count)
        .map(|n| {
            let contact = w.insert(
                "keap",
                "contacts",
                json!({"given_name": "Mona", "family_name": format!("Move{n:04}"),
                       "job_title": format!("Buyer {n}"),
                       "email_addresses": [{"email": format!("mona{n}@{domain}"), "field": "EMAIL1"}]}),
            );
            contact["id"].as_u64().expect("id").to_string()
        })
        .collect()
}

async fn get(url: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

fn ids(page: &Value) -> Vec<String> {
    page["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["id"].as_u64().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keap_offset_pages_skip_a_contact_edited_between_two_page_reads() {
    let w = World::new("moving-sim", 0).await;
    let all = contacts(&w, 25, "sim.example");
    let base = w.sandbox.base_url("keap").expect("keap's URL").to_owned();
    let first = get(&format!(
        "{base}/contacts?limit=10&order=last_updated&since=2000-01-01T00:00:00.000Z"
    ))
    .await;
    let mut read = ids(&first);
    assert_eq!(read, all[..10], "oldest first");
    // A person edits the first contact read: it moves to the end of the list.
    w.sandbox
        .update(
            "keap",
            "contacts",
            &all[0],
            json!({"job_title": "Head Buyer"}),
        )
        .expect("edited");
    let mut next = first["next"].as_str().expect("next").to_owned();
    loop {
        let page = get(&next).await;
        let got = ids(&page);
        if got.is_empty() {
            break;
        }
        read.extend(got);
        next = page["next"].as_str().expect("next").to_owned();
    }
    let seen: HashSet<&String> = read.iter().collect();
    let missed: Vec<&String> = all.iter().filter(|id| !seen.contains(id)).collect();
    assert_eq!(
        missed,
        vec![&all[10]],
        "the contact that moved up into the first page is never read"
    );
    assert_eq!(
        read.last(),
        Some(&all[0]),
        "the edited contact comes again, last"
    );

    // The same happens when the sandbox makes the edit between two pages.
    w.sandbox
        .edit_between_pages("keap", 1)
        .expect("keap simulates it");
    let first = get(&format!("{base}/contacts?limit=10&order=last_updated")).await;
    let second = get(first["next"].as_str().expect("next")).await;
    let edited = &ids(&first)[0];
    let record = w
        .sandbox
        .record("keap", "contacts", edited)
        .expect("lookup")
        .expect("the contact");
    assert!(
        record["job_title"]
            .as_str()
            .is_some_and(|t| t.ends_with(EDITED)),
        "{record}"
    );
    // The list was all[1..], all[0]: the first page was all[1..11], all[1] moved to the
    // end, and the page at offset 10 starts at all[12].
    assert_eq!(ids(&first), all[1..11], "oldest first");
    assert_eq!(edited, &all[1]);
    let second = ids(&second);
    assert_eq!(second.first(), Some(&all[12]), "{second:?}");
    assert!(
        !second.contains(&all[11]),
        "all[11] falls between the pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_reads_every_contact_when_one_moves_between_pages() {
    let w = World::new("moving-connector", 0).await;
    let all = contacts(&w, 1050, "connector.example");
    let connector = shipped_connector(&w.sandbox, "keap");

    w.sandbox
        .edit_between_pages("keap", 1)
        .expect("keap simulates it");
    let pages = read_all(connector.changes("contacts", None).expect("reader"))
        .await
        .expect("contacts read");
    let records: Vec<_> = pages.iter().flat_map(|p| &p.records).collect();
    let seen: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let missed: Vec<&String> = all
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    assert!(missed.is_empty(), "contacts never read: {missed:?}");
    let edited: Vec<_> = records
        .iter()
        .filter(|r| {
            r.data["job_title"]
                .as_str()
                .is_some_and(|t| t.ends_with(EDITED))
        })
        .collect();
    assert_eq!(edited.len(), 1, "the edit made during the read is read too");

    // A full listing misses none either, nor the listing of ids alone (the one that finds
    // deleted contacts, which parses each contact for its id and modified time only, the
    // time a keyset read goes on from), so no contact is taken for deleted.
    for ids_only in [false, true] {
        w.sandbox
            .edit_between_pages("keap", 1)
            .expect("keap simulates it");
        let reader = if ids_only {
            connector.list_ids("contacts")
        } else {
            connector.list_all("contacts")
        };
        let pages = read_all(reader.expect("reader"))
            .await
            .expect("contacts listed");
        let listed: HashSet<&str> = pages
            .iter()
            .flat_map(|p| &p.records)
            .map(|r| r.id.as_str())
            .collect();
        let missed: Vec<&String> = all
            .iter()
            .filter(|id| !listed.contains(id.as_str()))
            .collect();
        assert!(
            missed.is_empty(),
            "contacts missing from the full listing (ids only: {ids_only}): {missed:?}"
        );
        if ids_only {
            let fields: HashSet<&str> = pages
                .iter()
                .flat_map(|p| &p.records)
                .flat_map(|r| r.data.as_object().into_iter().flat_map(|o| o.keys()))
                .map(String::as_str)
                .collect();
            assert_eq!(fields, HashSet::from(["id", "last_updated"]));
            assert!(
                pages
                    .iter()
                    .flat_map(|p| &p.records)
                    .all(|r| r.modified.is_some())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keap_contact_or_edit_is_lost_when_contacts_move_during_a_run() {
    let w = World::new("moving-e2e", 0).await;
    contacts(&w, 1050, "e2e.example");
    w.sandbox
        .edit_between_pages("keap", 2)
        .expect("keap simulates it");
    let report = w.run(&[KEAP_CONTACTS]).await;
    assert_eq!(report.parked(), 0, "{report:#?}");
    let erp_count = |w: &World| {
        w.sandbox
            .records("customerp", "contacts")
            .expect("contacts")
            .iter()
            .filter(|c| {
                c["email"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("@e2e.example"))
            })
            .count()
    };
    assert_eq!(
        erp_count(&w),
        1050,
        "every contact reaches the ERP in the first run"
    );
    // The second edit falls in the listing that looks for deleted contacts, after the
    // changes were read: the next run syncs it.
    let again = w.run(&[KEAP_CONTACTS]).await;
    assert_eq!(again.parked(), 0, "{again:#?}");
    let erp = w
        .sandbox
        .records("customerp", "contacts")
        .expect("contacts");
    let synced: Vec<&Value> = erp
        .iter()
        .filter(|c| {
            c["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@e2e.example"))
        })
        .collect();
    assert_eq!(synced.len(), 1050, "every contact reaches the ERP");
    let keap = w.sandbox.records("keap", "contacts").expect("contacts");
    let edited: Vec<&Value> = keap
        .iter()
        .filter(|c| c["job_title"].as_str().is_some_and(|t| t.ends_with(EDITED)))
        .collect();
    assert_eq!(edited.len(), 2, "two contacts were edited during the run");
    for contact in edited {
        let email = contact["email_addresses"][0]["email"]
            .as_str()
            .expect("email");
        let target = synced
            .iter()
            .find(|c| c["email"] == email)
            .expect("the edited contact is in the ERP");
        assert_eq!(
            target["job_title"], contact["job_title"],
            "the edit reaches the ERP"
        );
    }
}
