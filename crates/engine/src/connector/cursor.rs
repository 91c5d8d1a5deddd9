//! Cursors: where the next incremental read of an entity starts, kept by the store as a
//! string between runs.
//!
//! A [`Cursor`] is one of three things:
//!
//! - the beginning (nothing read yet, or an entity that is always listed whole);
//! - a watermark: an instant `W` such that every record version modified before `W` has been
//!   handed to the engine, plus the versions `(id, modified)` already handed out at or after
//!   `W - lookback`;
//! - a sync token of a change feed (Keap products).
//!
//! [`Tracker`] does the watermark bookkeeping of one read: it says which `since` to ask for
//! (`W - lookback`), drops versions already handed out (by id and modified time, so records
//! read again because of the lookback, an inclusive filter or equal timestamps across pages
//! come out once), and says which cursor is safe to store after each page.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::connector::CLOCK_TOLERANCE;

/// The most versions a watermark cursor remembers. Versions it forgets may be handed out
/// again after a restart (never lost).
pub const MAX_SEEN: usize = 20_000;

/// `t - d`, or the earliest instant when that underflows (times come from APIs).
pub(crate) fn minus(t: DateTime<Utc>, d: chrono::Duration) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest time a watermark may move to when the system's clock shows `clock`:
/// `clock` plus [`CLOCK_TOLERANCE`].
pub(crate) fn latest_for(clock: DateTime<Utc>) -> DateTime<Utc> {
    let tolerance = chrono::Duration::from_std(CLOCK_TOLERANCE).unwrap_or_default();
    clock
        .checked_add_signed(tolerance)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What [`Tracker::admit`] made of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Already handed out: drop it.
    Repeat,
    /// New: hand it out.
    New,
    /// New, but stamped after the system's clock plus the tolerance: hand it out and report
    /// it; its time does not move the watermark.
    Ahead,
}

impl Admit {
    /// Whether the version is handed out.
    pub fn is_new(self) -> bool {
        self != Admit::Repeat
    }
}

/// Where the next read of an entity starts. Stored as its string form ([`fmt::Display`],
/// [`FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum State {
    Beginning,
    Watermark {
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        seen: Vec<(String, DateTime<Utc>)>,
    },
    SyncToken {
        token: String,
    },
}

#[derive(Deserialize)]
struct Document {
    v: u32,
    #[serde(flatten)]
    state: State,
}

/// [`Document`] as written, borrowing the state.
#[derive(Serialize)]
struct DocumentRef<'a> {
    v: u32,
    #[serde(flatten)]
    state: &'a State,
}

/// A stored cursor string that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: {0}")]
pub struct InvalidCursor(String);

impl Cursor {
    /// The cursor of an entity never read.
    pub fn beginning() -> Cursor {
        Cursor {
            state: State::Beginning,
        }
    }

    /// A watermark cursor with no remembered versions.
    pub fn at(watermark: DateTime<Utc>) -> Cursor {
        Cursor {
            state: State::Watermark {
                at: watermark,
                seen: Vec::new(),
            },
        }
    }

    /// A change-feed cursor.
    pub fn sync_token(token: impl Into<String>) -> Cursor {
        Cursor {
            state: State::SyncToken {
                token: token.into(),
            },
        }
    }

    /// The watermark, for watermark cursors.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            State::Watermark { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The token, for change-feed cursors.
    pub fn token(&self) -> Option<&str> {
        match &self.state {
            State::SyncToken { token } => Some(token),
            _ => None,
        }
    }

    /// Whether this is the beginning.
    pub fn is_beginning(&self) -> bool {
        self.state == State::Beginning
    }

    fn seen(&self) -> &[(String, DateTime<Utc>)] {
        match &self.state {
            State::Watermark { seen, .. } => seen,
            _ => &[],
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let document = DocumentRef {
            v: 1,
            state: &self.state,
        };
        match serde_json::to_string(&document) {
            Ok(text) => f.write_str(&text),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(text: &str) -> Result<Cursor, InvalidCursor> {
        let document: Document =
            serde_json::from_str(text).map_err(|e| InvalidCursor(e.to_string()))?;
        if document.v != 1 {
            return Err(InvalidCursor(format!("unknown version {}", document.v)));
        }
        Ok(Cursor {
            state: document.state,
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The watermark bookkeeping of one read (see the module comment).
#[derive(Debug)]
pub(crate) struct Tracker {
    start: Option<DateTime<Utc>>,
    lookback: chrono::Duration,
    /// The versions handed out, oldest first (by time, then id): a page's checkpoint takes
    /// the newest without sorting them again.
    seen: BTreeSet<(DateTime<Utc>, String)>,
    max: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    ordered: bool,
    covered: Option<DateTime<Utc>>,
    /// The system's clock at the page being read (its `Date`, or this machine's clock at
    /// the read); this machine's clock now when unset.
    clock: Option<DateTime<Utc>>,
}

impl Tracker {
    /// Starts a read from a stored cursor; any cursor that is not a watermark starts from
    /// the beginning.
    pub fn new(cursor: Option<&Cursor>, lookback: chrono::Duration) -> Tracker {
        let start = cursor.and_then(Cursor::watermark);
        let seen = cursor
            .map(|c| c.seen().iter().map(|(id, m)| (*m, id.clone())).collect())
            .unwrap_or_default();
        Tracker {
            start,
            lookback,
            seen,
            max: None,
            last: None,
            ordered: true,
            covered: None,
            clock: None,
        }
    }

    /// The system's clock when it answered the page whose versions come next: no version
    /// stamped after it (plus [`CLOCK_TOLERANCE`]) moves the watermark.
    pub fn clock(&mut self, clock: DateTime<Utc>) {
        self.clock = Some(clock);
    }

    /// The latest instant the watermark may move to now.
    fn latest(&self) -> DateTime<Utc> {
        latest_for(self.clock.unwrap_or_else(Utc::now))
    }

    /// The instant to ask for records modified since: the watermark minus the lookback, or
    /// nothing for a first, full read.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.start.map(|w| minus(w, self.lookback))
    }

    /// The highest modified time handed out in this read.
    pub fn max_seen(&self) -> Option<DateTime<Utc>> {
        self.max
    }

    /// Records a version: a repeat when it was already handed out; ahead when it is new
    /// but stamped after the system's clock plus the tolerance, so that its time does not
    /// move the watermark (a record stamped 20 hours ahead would otherwise hide every
    /// change made in those 20 hours). Versions without a modified time cannot be
    /// recognised and are always new.
    pub fn admit(&mut self, id: &str, modified: Option<DateTime<Utc>>) -> Admit {
        let Some(modified) = modified else {
            return Admit::New;
        };
        if !self.seen.insert((modified, id.to_owned())) {
            return Admit::Repeat;
        }
        if self.last.is_some_and(|last| modified < last) {
            self.ordered = false;
        }
        self.last = Some(modified);
        let admit = if modified <= self.latest() {
            self.max = self.max.max(Some(modified));
            Admit::New
        } else {
            Admit::Ahead
        };
        if self.ordered && self.seen.len() > 2 * MAX_SEEN {
            self.prune();
        }
        admit
    }

    /// The API states that everything up to `t` has been handed out (Salesforce
    /// `latestDateCovered`; the `Date` of a complete read's first page, where the system's
    /// `Date` header is the clock of its records). Never past the system's clock.
    pub fn cover(&mut self, t: DateTime<Utc>) {
        if t <= self.latest() {
            self.covered = self.covered.max(Some(t));
        }
    }

    /// Forgets versions that can no longer come back in an ordered read. Versions made in
    /// one burst (an import) all fall inside the lookback: of those, the newest
    /// [`MAX_SEEN`] are kept and an older one may be handed out again (never lost), so the
    /// memory of a read does not grow with the records it reads.
    fn prune(&mut self) {
        if let Some(max) = self.max {
            let floor = minus(max, self.lookback);
            self.seen = self.seen.split_off(&(floor, String::new()));
        }
        while self.seen.len() > MAX_SEEN {
            self.seen.pop_first();
        }
    }

    /// The cursor that is safe to store once every record handed out so far is done or
    /// parked. Mid-read, the watermark moves only while records have come oldest first;
    /// once the read is complete it moves to the newest version handed out.
    pub fn checkpoint(&self, complete: bool) -> Cursor {
        let reached = (complete || self.ordered).then_some(self.max).flatten();
        let Some(at) = [self.start, self.covered, reached]
            .into_iter()
            .flatten()
            .max()
        else {
            return Cursor::beginning();
        };
        let floor = minus(at, self.lookback);
        let mut seen: Vec<(String, DateTime<Utc>)> = self
            .seen
            .range((floor, String::new())..)
            .rev()
            .take(MAX_SEEN)
            .map(|(m, id)| (id.clone(), *m))
            .collect();
        seen.reverse();
        Cursor {
            state: State::Watermark { at, seen },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_read_of_records_made_in_one_burst_keeps_a_bounded_number_of_versions() {
        let mut tracker = Tracker::new(None, chrono::Duration::seconds(60));
        let at = t("2024-05-01T10:00:00Z");
        for i in 0..5 * MAX_SEEN {
            assert!(tracker.admit(&format!("{i:07}"), Some(at)).is_new());
        }
        assert!(tracker.seen.len() <= 2 * MAX_SEEN, "{}", tracker.seen.len());
        // The newest versions handed out are still known: a page read again at the end of
        // the read hands none of them out twice.
        let last = format!("{:07}", 5 * MAX_SEEN - 1);
        assert_eq!(tracker.admit(&last, Some(at)), Admit::Repeat);
        assert_eq!(tracker.checkpoint(true).seen().len(), MAX_SEEN);
    }

    #[test]
    fn cursor_strings_round_trip() {
        let mut tracker = Tracker::new(None, chrono::Duration::seconds(10));
        assert!(
            tracker
                .admit("1", Some(t("2024-05-01T10:00:00.123456Z")))
                .is_new()
        );
        let cursor = tracker.checkpoint(true);
        let text = cursor.to_string();
        assert_eq!(text.parse::<Cursor>().unwrap(), cursor);
        assert_eq!(cursor.watermark(), Some(t("2024-05-01T10:00:00.123456Z")));
        let token = Cursor::sync_token("abc");
        assert_eq!(
            token.to_string().parse::<Cursor>().unwrap().token(),
            Some("abc")
        );
        assert!(
            Cursor::beginning()
                .to_string()
                .parse::<Cursor>()
                .unwrap()
                .is_beginning()
        );
        assert!(
            "{\"v\":9,\"kind\":\"beginning\"}"
                .parse::<Cursor>()
                .is_err()
        );
        assert!("garbage".parse::<Cursor>().is_err());
    }

    #[test]
    fn lookback_re_reads_are_dropped_and_new_versions_pass() {
        let lookback = chrono::Duration::seconds(60);
        let mut first = Tracker::new(None, lookback);
        assert_eq!(first.since(), None);
        first.admit("a", Some(t("2024-05-01T10:00:00Z")));
        first.admit("b", Some(t("2024-05-01T10:00:30Z")));
        let cursor = first.checkpoint(true);

        let mut second = Tracker::new(Some(&cursor), lookback);
        assert_eq!(second.since(), Some(t("2024-05-01T09:59:30Z")));
        assert!(!second.admit("a", Some(t("2024-05-01T10:00:00Z"))).is_new());
        assert!(!second.admit("b", Some(t("2024-05-01T10:00:30Z"))).is_new());
        assert!(second.admit("a", Some(t("2024-05-01T10:00:31Z"))).is_new());
        assert!(second.admit("c", None).is_new());
        assert_eq!(
            second.checkpoint(true).watermark(),
            Some(t("2024-05-01T10:00:31Z"))
        );
    }

    #[test]
    fn watermark_holds_mid_read_when_records_come_out_of_order() {
        let start = Cursor::at(t("2024-05-01T00:00:00Z"));
        let mut tracker = Tracker::new(Some(&start), chrono::Duration::zero());
        tracker.admit("a", Some(t("2024-05-01T10:00:00Z")));
        assert_eq!(
            tracker.checkpoint(false).watermark(),
            Some(t("2024-05-01T10:00:00Z"))
        );
        tracker.admit("b", Some(t("2024-05-01T09:00:00Z")));
        assert_eq!(
            tracker.checkpoint(false).watermark(),
            Some(t("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            tracker.checkpoint(true).watermark(),
            Some(t("2024-05-01T10:00:00Z"))
        );
    }

    #[test]
    fn far_future_times_do_not_move_the_watermark() {
        let mut tracker = Tracker::new(None, chrono::Duration::zero());
        assert_eq!(
            tracker.admit("a", Some(t("2024-05-01T10:00:00Z"))),
            Admit::New
        );
        assert_eq!(
            tracker.admit("b", Some(t("2999-01-01T00:00:00Z"))),
            Admit::Ahead
        );
        assert_eq!(
            tracker.checkpoint(true).watermark(),
            Some(t("2024-05-01T10:00:00Z"))
        );
        tracker.cover(t("2999-01-01T00:00:00Z"));
        assert_eq!(
            tracker.checkpoint(true).watermark(),
            Some(t("2024-05-01T10:00:00Z"))
        );
    }

    #[test]
    fn times_ahead_of_the_system_clock_do_not_move_the_watermark() {
        let mut tracker = Tracker::new(None, chrono::Duration::zero());
        tracker.clock(t("2024-05-01T12:00:00Z"));
        assert_eq!(
            tracker.admit("a", Some(t("2024-05-01T11:00:00Z"))),
            Admit::New
        );
        assert_eq!(
            tracker.admit("b", Some(t("2024-05-01T12:04:59Z"))),
            Admit::New
        );
        assert_eq!(
            tracker.admit("c", Some(t("2024-05-02T08:00:00Z"))),
            Admit::Ahead
        );
        assert_eq!(
            tracker.admit("c", Some(t("2024-05-02T08:00:00Z"))),
            Admit::Repeat
        );
        let cursor = tracker.checkpoint(true);
        assert_eq!(cursor.watermark(), Some(t("2024-05-01T12:04:59Z")));
        tracker.cover(t("2024-05-01T13:00:00Z"));
        assert_eq!(
            tracker.checkpoint(true).watermark(),
            Some(t("2024-05-01T12:04:59Z"))
        );
        // The next read hands the record stamped ahead out once only.
        let mut next = Tracker::new(Some(&cursor), chrono::Duration::zero());
        next.clock(t("2024-05-01T12:30:00Z"));
        assert_eq!(
            next.admit("c", Some(t("2024-05-02T08:00:00Z"))),
            Admit::Repeat
        );
        assert_eq!(next.admit("d", Some(t("2024-05-01T12:20:00Z"))), Admit::New);
    }

    #[test]
    fn the_earliest_instants_do_not_overflow() {
        let mut tracker = Tracker::new(
            Some(&Cursor::at(DateTime::<Utc>::MIN_UTC)),
            chrono::Duration::seconds(60),
        );
        assert_eq!(tracker.since(), Some(DateTime::<Utc>::MIN_UTC));
        tracker.admit("a", Some(DateTime::<Utc>::MIN_UTC));
        assert_eq!(
            tracker.checkpoint(true).watermark(),
            Some(DateTime::<Utc>::MIN_UTC)
        );
    }

    #[test]
    fn coverage_moves_the_watermark() {
        let mut tracker = Tracker::new(None, chrono::Duration::zero());
        assert!(tracker.checkpoint(true).is_beginning());
        tracker.cover(t("2024-05-02T00:00:00Z"));
        assert_eq!(
            tracker.checkpoint(false).watermark(),
            Some(t("2024-05-02T00:00:00Z"))
        );
    }
}
