//! Change notifications (`POST /hooks/{system}`): verifying them and finding which entities
//! they say changed. The server then runs the mappings that read those entities, with their
//! cursors as usual, so a notification only brings the next incremental run forward: it is
//! never trusted for data, and a lost or forged one can at worst cause a run.
//!
//! Two styles, chosen per system file (`webhooks.style`):
//! - `keap`: Keap REST hooks. Subscribing makes Keap POST an `X-Hook-Secret` header that must
//!   be echoed back; events look like `{"event_key": "contact.edit", "object_keys": [...]}`.
//!   Keap does not sign events, so the hook URL carries the shared secret as `?token=`.
//! - `signed`: `{"entity": "customers", "ids": ["42"]}` with `X-Tether-Timestamp` and
//!   `X-Tether-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, refused when
//!   more than five minutes from now. Inside that window a notification is accepted once:
//!   [`ReplayGuard`] remembers the signatures it has seen until they leave the window, and
//!   refuses the same one again (409). Keap events carry nothing to tell a replay from a new
//!   event; the server coalesces the runs they ask for, so a replay costs at most a run.

use std::collections::BTreeSet;

use hmac::{KeyInit as _, Mac as _};
use serde::Deserialize;
use serde_json::Value;

use tether_engine::spec::system::{WebhookStyle, Webhooks};

use crate::serve::access::same_secret;

/// How far a signed notification's timestamp may be from now.
pub const MAX_SKEW_SECONDS: i64 = 300;
/// The largest notification body read.
pub const MAX_BODY: usize = 256 * 1024;
/// How many signatures [`ReplayGuard`] remembers at most (about 100 bytes each).
pub const MAX_REMEMBERED: usize = 100_000;

/// What a notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The Keap subscription handshake: answer 200 with this `X-Hook-Secret`.
    Handshake(String),
    /// These entities of the system changed; `signed` identifies a signed notification.
    Changed {
        entities: Vec<String>,
        signed: Option<Signed>,
    },
}

/// What makes a signed notification unique: its timestamp and its verified MAC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signed {
    pub timestamp: i64,
    pub mac: Vec<u8>,
}

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("system `{0}` takes no change notifications (no `webhooks` in its system file)")]
    NotConfigured(String),
    #[error("the webhook secret of `{system}` cannot be read: {reason}")]
    Secret { system: String, reason: String },
    #[error("the notification is not authenticated: {0}")]
    Unauthenticated(String),
    #[error("the notification is malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Replay(String),
}

impl HookError {
    /// The HTTP status the sender gets.
    pub fn status(&self) -> u16 {
        match self {
            HookError::NotConfigured(_) => 404,
            HookError::Secret { .. } => 503,
            HookError::Unauthenticated(_) => 401,
            HookError::Malformed(_) => 400,
            HookError::Replay(_) => 409,
        }
    }
}

/// The parts of a request a notification is judged by.
#[derive(Debug, Clone, Copy)]
pub struct HookRequest<'a> {
    /// The `token` query parameter.
    pub token: Option<&'a str>,
    pub hook_secret: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
    /// The current Unix time.
    pub now: i64,
}

/// Verifies a notification for `system` and says what it asks for.
pub fn receive(
    system: &str,
    hooks: &Webhooks,
    secret: &str,
    request: &HookRequest<'_>,
) -> Result<Notice, HookError> {
    match hooks.style {
        WebhookStyle::Keap => keap(hooks, secret, request),
        WebhookStyle::Signed => signed(system, secret, request),
    }
}

/// An HMAC-SHA256 keyed with `key`.
fn hmac(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

#[derive(Deserialize)]
struct KeapEvent {
    event_key: String,
    #[serde(default)]
    object_keys: Vec<Value>,
}

fn keap(hooks: &Webhooks, secret: &str, request: &HookRequest<'_>) -> Result<Notice, HookError> {
    match request.token {
        Some(token) if same_secret(token, secret) => {}
        Some(_) => return Err(HookError::Unauthenticated("wrong `token`".into())),
        None => {
            return Err(HookError::Unauthenticated(
                "the hook URL must carry `?token=<secret>`".into(),
            ));
        }
    }
    if let Some(hook_secret) = request.hook_secret {
        return Ok(Notice::Handshake(hook_secret.to_owned()));
    }
    let event: KeapEvent = serde_json::from_slice(request.body)
        .map_err(|e| HookError::Malformed(format!("not a Keap hook event: {e}")))?;
    let object = event
        .event_key
        .split_once('.')
        .map_or(event.event_key.as_str(), |(object, _)| object);
    let entity = hooks.objects.get(object).ok_or_else(|| {
        HookError::Malformed(format!(
            "event `{}`: object `{object}` is not listed under `webhooks.objects`",
            event.event_key
        ))
    })?;
    tracing::debug!(event = %event.event_key, objects = event.object_keys.len(), "keap hook event");
    Ok(Notice::Changed {
        entities: vec![entity.value.clone()],
        signed: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedNotice {
    entity: String,
    #[serde(default)]
    ids: Vec<Value>,
}

fn signed(system: &str, secret: &str, request: &HookRequest<'_>) -> Result<Notice, HookError> {
    let timestamp = request
        .timestamp
        .ok_or_else(|| HookError::Unauthenticated("no `X-Tether-Timestamp` header".into()))?;
    let signature = request
        .signature
        .ok_or_else(|| HookError::Unauthenticated("no `X-Tether-Signature` header".into()))?;
    let seconds: i64 = timestamp.trim().parse().map_err(|_| {
        HookError::Unauthenticated(format!(
            "`X-Tether-Timestamp` `{timestamp}` is not a number"
        ))
    })?;
    if (request.now - seconds).abs() > MAX_SKEW_SECONDS {
        return Err(HookError::Unauthenticated(format!(
            "the timestamp is more than {MAX_SKEW_SECONDS} s from now (a replay, or clocks apart)"
        )));
    }
    let hex = signature.trim().strip_prefix("sha256=").ok_or_else(|| {
        HookError::Unauthenticated("the signature must start with `sha256=`".into())
    })?;
    let given = decode_hex(hex)
        .ok_or_else(|| HookError::Unauthenticated("the signature is not hexadecimal".into()))?;
    let mut mac = hmac(secret.as_bytes());
    mac.update(timestamp.trim().as_bytes());
    mac.update(b".");
    mac.update(request.body);
    mac.verify_slice(&given).map_err(|_| {
        HookError::Unauthenticated(format!("the signature does not match {system}'s secret"))
    })?;
    let notice: SignedNotice = serde_json::from_slice(request.body).map_err(|e| {
        HookError::Malformed(format!("expected {{\"entity\": ..., \"ids\": [...]}}: {e}"))
    })?;
    tracing::debug!(%system, entity = %notice.entity, ids = notice.ids.len(), "signed change notification");
    Ok(Notice::Changed {
        entities: vec![notice.entity],
        signed: Some(Signed {
            timestamp: seconds,
            mac: given,
        }),
    })
}

/// The signed notifications seen in the last [`MAX_SKEW_SECONDS`], per system, so that one
/// is accepted once. Memory is bounded: entries leave once their timestamp is out of the
/// window (the window refuses them anyway), and beyond [`MAX_REMEMBERED`] the oldest are
/// dropped; a notification no newer than a dropped one is then refused too, since it could
/// be a replay no longer remembered (a sender retries with a new timestamp).
#[derive(Debug)]
pub struct ReplayGuard {
    seen: BTreeSet<(i64, String, Vec<u8>)>,
    cap: usize,
    /// The newest timestamp dropped for room.
    floor: Option<i64>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::with_capacity(MAX_REMEMBERED)
    }
}

impl ReplayGuard {
    pub fn with_capacity(cap: usize) -> ReplayGuard {
        ReplayGuard {
            seen: BTreeSet::new(),
            cap: cap.max(1),
            floor: None,
        }
    }

    /// Accepts a verified notification of `system` the first time, refuses it after.
    pub fn admit(&mut self, system: &str, signed: &Signed, now: i64) -> Result<(), HookError> {
        let oldest_in_window = now - MAX_SKEW_SECONDS;
        while let Some(first) = self.seen.first()
            && first.0 < oldest_in_window
        {
            self.seen.pop_first();
        }
        if self.floor.is_some_and(|f| f < oldest_in_window) {
            self.floor = None;
        }
        if self.floor.is_some_and(|f| signed.timestamp <= f) {
            return Err(HookError::Replay(format!(
                "too many notifications in the last {MAX_SKEW_SECONDS} s to tell whether this \
                 one is a replay; send it again with a new timestamp"
            )));
        }
        let key = (signed.timestamp, system.to_owned(), signed.mac.clone());
        if !self.seen.insert(key) {
            return Err(HookError::Replay(format!(
                "this notification was already received (same timestamp and signature within \
                 {MAX_SKEW_SECONDS} s): a replay is refused; a new notification needs a new \
                 timestamp"
            )));
        }
        while self.seen.len() > self.cap {
            if let Some((timestamp, _, _)) = self.seen.pop_first() {
                self.floor = Some(self.floor.map_or(timestamp, |f| f.max(timestamp)));
            }
        }
        Ok(())
    }

    /// How many signatures are remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// The signature header value of `body` sent at `timestamp`, as a sender computes it.
#[cfg(test)]
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac(secret.as_bytes());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_engine::spec::env::EnvString;
    use tether_engine::spec::node::{Loc, Pos};

    fn hooks(style: WebhookStyle) -> Webhooks {
        let loc = |s: &str| Loc {
            value: s.to_owned(),
            pos: Pos::default(),
        };
        Webhooks {
            style,
            secret: Loc {
                value: EnvString("${SECRET}".into()),
                pos: Pos::default(),
            },
            objects: [("contact".to_owned(), loc("contacts"))]
                .into_iter()
                .collect(),
        }
    }

    fn request(body: &[u8]) -> HookRequest<'_> {
        HookRequest {
            token: None,
            hook_secret: None,
            timestamp: None,
            signature: None,
            body,
            now: 1_800_000_000,
        }
    }

    #[test]
    fn keap_handshake_and_events() {
        let h = hooks(WebhookStyle::Keap);
        let handshake = HookRequest {
            token: Some("s3cret"),
            hook_secret: Some("abc"),
            ..request(b"")
        };
        assert_eq!(
            receive("keap", &h, "s3cret", &handshake),
            Ok(Notice::Handshake("abc".into()))
        );
        let body =
            br#"{"event_key":"contact.edit","object_type":"contact","object_keys":[{"id":7}]}"#;
        let event = HookRequest {
            token: Some("s3cret"),
            ..request(body)
        };
        assert_eq!(
            receive("keap", &h, "s3cret", &event),
            Ok(Notice::Changed {
                entities: vec!["contacts".into()],
                signed: None
            })
        );
        let forged = HookRequest {
            token: Some("guess"),
            ..request(body)
        };
        assert_eq!(
            receive("keap", &h, "s3cret", &forged).map_err(|e| e.status()),
            Err(401)
        );
        let unknown = HookRequest {
            token: Some("s3cret"),
            ..request(br#"{"event_key":"invoice.add"}"#)
        };
        assert_eq!(
            receive("keap", &h, "s3cret", &unknown).map_err(|e| e.status()),
            Err(400)
        );
    }

    #[test]
    fn signed_notifications_are_checked() {
        let h = hooks(WebhookStyle::Signed);
        let body = br#"{"entity":"customers","ids":["42"]}"#;
        let now = 1_800_000_000;
        let signature = sign("k", now - 10, body);
        let timestamp = (now - 10).to_string();
        let good = HookRequest {
            timestamp: Some(&timestamp),
            signature: Some(&signature),
            ..request(body)
        };
        match receive("shop", &h, "k", &good) {
            Ok(Notice::Changed {
                entities,
                signed: Some(signed),
            }) => {
                assert_eq!(entities, ["customers"]);
                assert_eq!(signed.timestamp, now - 10);
                assert_eq!(signed.mac.len(), 32);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            receive("shop", &h, "other", &good).map_err(|e| e.status()),
            Err(401)
        );
        let tampered = HookRequest {
            body: br#"{"entity":"products","ids":["42"]}"#,
            ..good
        };
        assert_eq!(
            receive("shop", &h, "k", &tampered).map_err(|e| e.status()),
            Err(401)
        );
        let old_ts = (now - 3600).to_string();
        let old_sig = sign("k", now - 3600, body);
        let replay = HookRequest {
            timestamp: Some(&old_ts),
            signature: Some(&old_sig),
            ..request(body)
        };
        assert_eq!(
            receive("shop", &h, "k", &replay).map_err(|e| e.status()),
            Err(401)
        );
    }

    fn signed(timestamp: i64, mac: u8) -> Signed {
        Signed {
            timestamp,
            mac: vec![mac; 32],
        }
    }

    #[test]
    fn a_notification_is_accepted_once_in_its_window() {
        let now = 1_800_000_000;
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.admit("shop", &signed(now, 1), now), Ok(()));
        let replay = guard.admit("shop", &signed(now, 1), now + 10);
        assert_eq!(replay.as_ref().map_err(HookError::status), Err(409));
        assert!(replay.expect_err("replay").to_string().contains("replay"));
        assert_eq!(
            guard.admit("shop", &signed(now, 2), now),
            Ok(()),
            "another signature"
        );
        assert_eq!(
            guard.admit("erp", &signed(now, 1), now),
            Ok(()),
            "the same bytes from another system are another notification"
        );
        // Once out of the window the entry is forgotten (the window refuses it anyway).
        assert_eq!(
            guard.admit("shop", &signed(now + 400, 3), now + 400),
            Ok(())
        );
        assert_eq!(guard.len(), 1, "entries older than the window are dropped");
    }

    #[test]
    fn memory_is_capped_without_letting_a_replay_through() {
        let now = 1_800_000_000;
        let mut guard = ReplayGuard::with_capacity(3);
        for (i, ts) in [now - 4, now - 3, now - 2, now - 1].into_iter().enumerate() {
            assert_eq!(guard.admit("shop", &signed(ts, i as u8), now), Ok(()));
        }
        assert_eq!(guard.len(), 3, "the cap holds");
        // The dropped one (now - 4) comes again: refused though no longer remembered.
        assert_eq!(
            guard
                .admit("shop", &signed(now - 4, 0), now)
                .map_err(|e| e.status()),
            Err(409)
        );
        assert!(
            guard.admit("shop", &signed(now - 4, 9), now).is_err(),
            "nothing at or before the dropped timestamp is let through"
        );
        assert_eq!(
            guard.admit("shop", &signed(now, 7), now),
            Ok(()),
            "new ones pass"
        );
        // Once the dropped timestamps leave the window, the floor goes with them.
        let later = now + MAX_SKEW_SECONDS + 5;
        assert_eq!(guard.admit("shop", &signed(later, 8), later), Ok(()));
        assert_eq!(guard.len(), 1);
    }
}
