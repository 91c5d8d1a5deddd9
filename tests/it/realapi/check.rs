//! `tether check` against the sandbox: every system and entity the shipped flows use
//! passes with good credentials (reads of one record, Salesforce's describe for writes and
//! fields, the daily allowances); a wrong credential of each auth kind fails that system
//! without printing the secret; an org lacking a mapped field fails naming the field and
//! the mapping; `--format json` says the same.

use serde_json::Value;
use tether_engine::connector::Connector;
use tether_engine::ops::check::WRITES_NOT_CHECKED;
use tether_sandbox::{RateLimits, SalesforceOrg, Sandbox, SandboxOptions};

use super::{SF_CONTACTS, flows, sandbox, shipped_connector};

/// Runs `tether check` with the sandbox's environment, `changes` applied; its exit code and
/// output (standard output, then the logs).
async fn check(sandbox: &Sandbox, changes: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = check_apart(sandbox, changes, args).await;
    (code, format!("{stdout}{stderr}"))
}

/// Runs `tether check` as [`check`]: its exit code, standard output and the logs apart.
async fn check_apart(
    sandbox: &Sandbox,
    changes: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let mut env: std::collections::HashMap<String, String> = sandbox.env().into_iter().collect();
    for (name, value) in changes {
        env.insert((*name).to_owned(), (*value).to_owned());
    }
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
    command
        .arg("check")
        .arg("--flows")
        .arg(flows())
        .args(args)
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joins")
        .expect("tether runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The line of `what` (`keap` or `keap contacts`).
fn line<'a>(text: &'a str, what: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(&format!("{what}: ")))
        .unwrap_or_else(|| panic!("a line for `{what}` in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_system_and_entity_passes_with_good_credentials() {
    let sandbox = sandbox(2).await;
    let (code, text) = check(&sandbox, &[], &[]).await;
    assert_eq!(code, 0, "{text}");
    for system in [
        "keap",
        "salesforce",
        "customerp",
        "customcrm",
        "customwebshop",
    ] {
        assert!(
            line(&text, system).starts_with(&format!("{system}: ok: reachable, authenticated")),
            "{text}"
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 10, "one line per system and entity:\n{text}");
    for l in &lines {
        assert!(l.contains(": ok: "), "every line passes: {l}\n{text}");
    }
    // Salesforce says what the user may write (its describe); Keap cannot be asked.
    let contact = line(&text, "salesforce Contact");
    assert_eq!(
        contact,
        "salesforce Contact: ok: readable; writable (create, update)"
    );
    let contacts = line(&text, "keap contacts");
    assert!(contacts.contains(WRITES_NOT_CHECKED), "{contacts}");
    assert_eq!(
        line(&text, "salesforce Order"),
        "salesforce Order: ok: readable"
    );
    // The daily allowances both report.
    assert!(
        line(&text, "salesforce").contains("daily allowance: "),
        "{text}"
    );
    assert!(line(&text, "keap").contains("daily allowance: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_is_read_one_record_at_a_time() {
    let sandbox = sandbox(2).await;
    for (system, entity) in [
        ("salesforce", "Contact"),
        ("salesforce", "Order"),
        ("keap", "contacts"),
    ] {
        let connector = shipped_connector(&sandbox, system);
        let read = connector.probe(entity).await.expect("reads");
        assert_eq!(read, 1, "{system} {entity}: one record, not a page");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_of_each_auth_kind_fails_its_system_without_the_secret() {
    let sandbox = sandbox(2).await;
    // Keap's token (an API key header), Salesforce's and the CRM's OAuth2 client
    // credentials, the ERP's bearer token, the web shop's API key.
    let wrong = [
        ("KEAP_API_KEY", "keap", "wrong-keap-key-1234"),
        (
            "SALESFORCE_CLIENT_SECRET",
            "salesforce",
            "wrong-sf-secret-1234",
        ),
        (
            "CUSTOMCRM_CLIENT_SECRET",
            "customcrm",
            "wrong-crm-secret-1234",
        ),
        ("CUSTOMERP_TOKEN", "customerp", "wrong-erp-token-1234"),
        (
            "CUSTOMWEBSHOP_API_KEY",
            "customwebshop",
            "wrong-shop-key-1234",
        ),
    ];
    for (variable, system, value) in wrong {
        let (code, text) = check(&sandbox, &[(variable, value)], &["--system", system]).await;
        assert_eq!(code, 1, "{variable}: {text}");
        assert!(
            line(&text, system).starts_with(&format!("{system}: FAILED")),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.starts_with(system)),
            "only {system} is checked: {text}"
        );
        assert!(
            !text.contains(value),
            "the credential is never printed: {text}"
        );
    }

    let (code, text, logs) = check_apart(
        &sandbox,
        &[("KEAP_API_KEY", "wrong-keap-key-1234")],
        &["--format", "json"],
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("wrong-keap-key-1234"), "{text}");
    assert!(!logs.contains("wrong-keap-key-1234"), "{logs}");
    let lines: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    let system = |name: &str| {
        lines
            .iter()
            .find(|l| l["system"] == name && l.get("entity").is_none())
            .unwrap_or_else(|| panic!("{name}'s line in {text}"))
    };
    assert_eq!(system("keap")["ok"], false);
    assert_eq!(system("salesforce")["ok"], true, "{text}");
    let entities: Vec<&Value> = lines
        .iter()
        .filter(|l| l["system"] == "keap" && l.get("entity").is_some())
        .collect();
    assert!(!entities.is_empty(), "{text}");
    for entity in entities {
        assert_eq!(entity["ok"], false, "{entity}");
        assert!(
            entity["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{entity}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_lacking_a_mapped_field_fails_naming_the_field_and_the_mapping() {
    let sandbox = Sandbox::start(SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        salesforce_org: SalesforceOrg {
            state_country_picklists: false,
            reduction_orders: false,
            hidden_fields: vec!["Contact.Title".to_owned()],
        },
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let (code, text) = check(&sandbox, &[], &["--system", "salesforce"]).await;
    assert_eq!(code, 1, "{text}");
    let contact = line(&text, "salesforce Contact");
    assert!(
        contact.starts_with("salesforce Contact: FAILED: "),
        "{text}"
    );
    assert!(contact.contains("`Title`"), "{contact}");
    assert!(contact.contains(SF_CONTACTS), "{contact}");
    assert!(
        line(&text, "salesforce").contains("entities fail: Contact"),
        "{text}"
    );
    // Fields the org lacks that no mapping uses do not fail an entity.
    assert!(line(&text, "salesforce Order").contains(": ok: "), "{text}");

    let (code, json, _logs) = check_apart(
        &sandbox,
        &[],
        &["--system", "salesforce", "--format", "json"],
    )
    .await;
    assert_eq!(code, 1, "{json}");
    let lines: Vec<Value> = serde_json::from_str(&json).expect("JSON");
    let contact = lines
        .iter()
        .find(|l| l["entity"] == "Contact")
        .expect("Contact's line");
    assert_eq!(contact["ok"], false);
    assert!(
        contact["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Title")),
        "{contact}"
    );
}
