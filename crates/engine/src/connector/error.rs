//! Connector errors: what failed, where (system, entity, method, URL without secrets), and
//! whether trying again later can help.
//!
//! The engine parks a record refused by the target ([`ConnectorError::api_error`] gives the
//! status, code, message and field) and stops or postpones work on transient failures
//! ([`ConnectorError::is_retryable`]). Every error is `Clone` so one failed batch request can
//! be reported against each record it carried.

use std::fmt;
use std::time::Duration;

/// Where a request went: the system, the entity it was about, the method and the URL with
/// secrets removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub system: String,
    pub entity: String,
    pub method: String,
    pub url: String,
}

impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entity.is_empty() {
            write!(f, "{}: {} {}", self.system, self.method, self.url)
        } else {
            write!(
                f,
                "{} {}: {} {}",
                self.system, self.entity, self.method, self.url
            )
        }
    }
}

/// An error an API reported, read with the system file's `errors` paths (or, inside a
/// Salesforce batch answer, from the per-record `statusCode` errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status; absent for a per-record failure inside a successful batch answer.
    pub status: Option<u16>,
    /// The machine-readable code (`DUPLICATE_VALUE`, `validation_failed`).
    pub code: Option<String>,
    /// The human-readable message.
    pub message: String,
    /// The field the API blames, when it names one.
    pub field: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.code {
            write!(f, " (code {code})")?;
        }
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

/// Per-record error codes of Salesforce that mean "the record was fine, try again".
const RETRYABLE_CODES: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG",
];

/// Why a connector call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The system file cannot be used as written (bad URL, bad JSONPath, unset variable).
    #[error("{system}: {message}")]
    Config { system: String, message: String },
    /// The flow names an entity the system file does not describe.
    #[error("{system}: unknown entity `{entity}`")]
    UnknownEntity { system: String, entity: String },
    /// The system file gives the entity no way to do this.
    #[error("{system} {entity}: the system file gives no way to {operation}")]
    Unsupported {
        system: String,
        entity: String,
        operation: &'static str,
    },
    /// The API answered with a status that is not success, after any retries.
    #[error("{context} answered {status}: {error}")]
    Status {
        context: Box<RequestContext>,
        status: u16,
        error: ApiError,
        /// The wait the API asked for, when it said (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The API accepted the request but refused this record (a failure inside a batch).
    #[error("{context} refused the record: {error}")]
    Rejected {
        context: Box<RequestContext>,
        error: ApiError,
    },
    /// Authentication failed: the token endpoint refused the credentials, or the API
    /// answered 401 again after a fresh token.
    #[error("{context}: authentication failed: {message}")]
    Auth {
        context: Box<RequestContext>,
        message: String,
    },
    /// No complete answer within the timeout, after any retries.
    #[error("{context}: no answer within {seconds} s")]
    Timeout {
        context: Box<RequestContext>,
        seconds: f64,
    },
    /// The connection failed or broke off (refused, reset, body cut short).
    #[error("{context}: connection failed: {message}")]
    Transport {
        context: Box<RequestContext>,
        message: String,
        /// The request never reached the server (it is safe to send again).
        before_sending: bool,
    },
    /// The answer is not what the system file says it should be (not JSON, or no records,
    /// id or token where expected).
    #[error("{context}: malformed response: {message}")]
    Malformed {
        context: Box<RequestContext>,
        message: String,
        /// Whether asking again may help (a garbled body), or the shape is simply wrong.
        transient: bool,
    },
    /// The answer is larger than `http.max_response_bytes`.
    #[error("{context}: response larger than {limit} bytes")]
    TooLarge {
        context: Box<RequestContext>,
        limit: u64,
    },
    /// A next-page link or redirect points at a host the credentials must not go to.
    #[error("{context}: refused to follow a link to another origin ({target})")]
    ForeignOrigin {
        context: Box<RequestContext>,
        target: String,
    },
    /// An id that cannot address a record: empty, `.` or `..` (which a URL cannot carry as
    /// a path segment), or not an integer where the system file says `id_type: integer`.
    /// Nothing was sent.
    #[error("{system} {entity}: the id `{id}` cannot address a record: {reason}")]
    InvalidId {
        system: String,
        entity: String,
        id: String,
        reason: String,
    },
    /// A listing that does not end: the API answered a page already seen, sent back a
    /// cursor or next link already followed, or the listing went past `list.max_pages`.
    #[error("{system} {entity}: the listing does not end: {reason}; stopped after {pages} pages")]
    EndlessListing {
        system: String,
        entity: String,
        /// Pages read before it stopped.
        pages: u64,
        reason: String,
    },
    /// The system's rate limits would keep this run waiting longer than
    /// `http.max_wait_seconds` in total: the system takes no more requests in this run.
    #[error(
        "{system}: stopped for this run: the API asked to wait {} s more, but {} s of the \
         {} s this system may wait in one run (`http.max_wait_seconds`) are spent",
        secs(*asked), secs(*waited), secs(*limit)
    )]
    WaitBudgetSpent {
        system: String,
        /// The time already waited in this run.
        waited: Duration,
        /// The wait the API asked for that did not fit.
        asked: Duration,
        /// The budget (`http.max_wait_seconds`).
        limit: Duration,
    },
    /// The API's request allowance for the day is spent (Salesforce's 403
    /// `REQUEST_LIMIT_EXCEEDED`): the system takes no more requests in this run.
    #[error("{context}: stopped for this run: the API's daily request allowance is spent: {error}")]
    AllowanceSpent {
        context: Box<RequestContext>,
        error: ApiError,
    },
    /// The system's answers say its daily allowance is used up to the reserve left to the
    /// account's other integrations (`allowance.reserve`): the system takes no more
    /// requests in this run.
    #[error(
        "{system}: stopped for this run: {used} of the {allowed} requests of the daily allowance are used, \
         and {}% is left to other integrations (`allowance.reserve`)",
        (reserve * 100.0).round()
    )]
    AllowanceReserve {
        system: String,
        used: u64,
        allowed: u64,
        reserve: f64,
    },
}

/// Seconds with at most one decimal, for messages.
fn secs(duration: Duration) -> String {
    let tenths = (duration.as_secs_f64() * 10.0).round() / 10.0;
    format!("{tenths}")
}

impl ConnectorError {
    /// Whether the same call may succeed later: rate limits (a 403 `REQUEST_LIMIT_EXCEEDED`
    /// of Salesforce's concurrency limit that outlasted the retries; a spent wait budget or
    /// daily allowance, in a later run), server errors, timeouts, broken connections,
    /// garbled bodies, and Salesforce's lock and rollback codes. A create whose outcome is
    /// unknown is retryable too; see [`Self::may_have_applied`].
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Status { status, error, .. } => {
                *status == 429
                    || *status == 408
                    || *status >= 500
                    || error.code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED")
            }
            ConnectorError::Rejected { error, .. } => error
                .code
                .as_deref()
                .is_some_and(|code| RETRYABLE_CODES.contains(&code)),
            ConnectorError::Timeout { .. }
            | ConnectorError::Transport { .. }
            | ConnectorError::WaitBudgetSpent { .. }
            | ConnectorError::AllowanceSpent { .. }
            | ConnectorError::AllowanceReserve { .. } => true,
            ConnectorError::Malformed { transient, .. } => *transient,
            _ => false,
        }
    }

    /// Whether the system takes no more requests in this run ([`Self::WaitBudgetSpent`],
    /// [`Self::AllowanceSpent`]): every later call of this system fails at once with the
    /// same error until the next run ([`crate::connector::Connector::start_run`]). The
    /// engine stops the system's work for the run and reports why; the records it could
    /// not write wait for a later run (the error is retryable, never a reason to park).
    pub fn stops_system(&self) -> bool {
        matches!(
            self,
            ConnectorError::WaitBudgetSpent { .. }
                | ConnectorError::AllowanceSpent { .. }
                | ConnectorError::AllowanceReserve { .. }
        )
    }

    /// Whether the system's daily allowance stopped it ([`Self::AllowanceSpent`],
    /// [`Self::AllowanceReserve`]): not a failure of the run, which goes on with the other
    /// systems; the next run carries on.
    pub fn is_allowance(&self) -> bool {
        matches!(
            self,
            ConnectorError::AllowanceSpent { .. } | ConnectorError::AllowanceReserve { .. }
        )
    }

    /// The system the error is about.
    pub fn system(&self) -> &str {
        match self {
            ConnectorError::Config { system, .. }
            | ConnectorError::UnknownEntity { system, .. }
            | ConnectorError::Unsupported { system, .. }
            | ConnectorError::InvalidId { system, .. }
            | ConnectorError::EndlessListing { system, .. }
            | ConnectorError::WaitBudgetSpent { system, .. }
            | ConnectorError::AllowanceReserve { system, .. } => system,
            ConnectorError::Status { context, .. }
            | ConnectorError::Rejected { context, .. }
            | ConnectorError::Auth { context, .. }
            | ConnectorError::Timeout { context, .. }
            | ConnectorError::Transport { context, .. }
            | ConnectorError::Malformed { context, .. }
            | ConnectorError::TooLarge { context, .. }
            | ConnectorError::ForeignOrigin { context, .. }
            | ConnectorError::AllowanceSpent { context, .. } => &context.system,
        }
    }

    /// Whether the failure is the API's final word on this input (4xx, refused record,
    /// configuration): sending it again unchanged will fail again.
    pub fn is_permanent(&self) -> bool {
        !self.is_retryable()
    }

    /// Whether a write may have been applied although it failed: a timeout, a broken
    /// connection after the request was sent, a 5xx or a garbled answer. A create that
    /// failed this way must be resolved by match key before it is sent again.
    pub fn may_have_applied(&self) -> bool {
        match self {
            ConnectorError::Timeout { .. } => true,
            ConnectorError::Transport { before_sending, .. } => !before_sending,
            ConnectorError::Status { status, .. } => *status >= 500 && *status != 503,
            ConnectorError::Malformed { .. } | ConnectorError::TooLarge { .. } => true,
            _ => false,
        }
    }

    /// The API's own account of the failure, for parking a record with a clear reason.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ConnectorError::Status { error, .. }
            | ConnectorError::Rejected { error, .. }
            | ConnectorError::AllowanceSpent { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status, when the API answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request the error is about, when there was one.
    pub fn context(&self) -> Option<&RequestContext> {
        match self {
            ConnectorError::Status { context, .. }
            | ConnectorError::Rejected { context, .. }
            | ConnectorError::Auth { context, .. }
            | ConnectorError::Timeout { context, .. }
            | ConnectorError::Transport { context, .. }
            | ConnectorError::Malformed { context, .. }
            | ConnectorError::TooLarge { context, .. }
            | ConnectorError::ForeignOrigin { context, .. }
            | ConnectorError::AllowanceSpent { context, .. } => Some(context),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Box<RequestContext> {
        Box::new(RequestContext {
            system: "customerp".into(),
            entity: "customers".into(),
            method: "POST".into(),
            url: "http://127.0.0.1:9/api/customers".into(),
        })
    }

    #[test]
    fn classifies_statuses() {
        let status = |status| ConnectorError::Status {
            context: context(),
            status,
            error: ApiError {
                status: Some(status),
                code: Some("x".into()),
                message: "m".into(),
                field: None,
            },
            retry_after: None,
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(503).may_have_applied());
        assert!(status(500).may_have_applied());
        assert!(status(422).is_permanent());
        assert!(status(404).is_permanent());
        assert_eq!(
            status(422).api_error().map(|e| e.message.as_str()),
            Some("m")
        );
    }

    #[test]
    fn message_names_system_entity_and_url() {
        let error = ConnectorError::Status {
            context: context(),
            status: 422,
            error: ApiError {
                status: Some(422),
                code: Some("duplicate".into()),
                message: "email already exists".into(),
                field: Some("email".into()),
            },
            retry_after: None,
        };
        assert_eq!(
            error.to_string(),
            "customerp customers: POST http://127.0.0.1:9/api/customers answered 422: \
             email already exists (code duplicate) (field `email`)"
        );
    }

    #[test]
    fn salesforce_lock_errors_are_retryable() {
        let rejected = |code: &str| ConnectorError::Rejected {
            context: context(),
            error: ApiError {
                status: None,
                code: Some(code.into()),
                message: "m".into(),
                field: None,
            },
        };
        assert!(rejected("UNABLE_TO_LOCK_ROW").is_retryable());
        assert!(rejected("DUPLICATES_DETECTED").is_permanent());
    }

    #[test]
    fn stopped_systems_are_retried_in_a_later_run_never_parked() {
        let spent = ConnectorError::WaitBudgetSpent {
            system: "keap".into(),
            waited: Duration::from_millis(1500),
            asked: Duration::from_secs(300),
            limit: Duration::from_secs(2),
        };
        assert!(spent.stops_system() && spent.is_retryable() && !spent.may_have_applied());
        assert_eq!(spent.system(), "keap");
        assert_eq!(
            spent.to_string(),
            "keap: stopped for this run: the API asked to wait 300 s more, but 1.5 s of the \
             2 s this system may wait in one run (`http.max_wait_seconds`) are spent"
        );
        let allowance = ConnectorError::AllowanceSpent {
            context: context(),
            error: ApiError {
                status: Some(403),
                code: Some("REQUEST_LIMIT_EXCEEDED".into()),
                message: "TotalRequests Limit exceeded.".into(),
                field: None,
            },
        };
        assert!(allowance.stops_system() && !allowance.is_permanent());
        assert_eq!(allowance.system(), "customerp");
        let endless = ConnectorError::EndlessListing {
            system: "customerp".into(),
            entity: "customers".into(),
            pages: 3,
            reason: "it has more than 3 pages (`list.max_pages`)".into(),
        };
        assert!(!endless.stops_system() && endless.is_permanent());
        assert_eq!(
            endless.to_string(),
            "customerp customers: the listing does not end: it has more than 3 pages \
             (`list.max_pages`); stopped after 3 pages"
        );
    }
}
