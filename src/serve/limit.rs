//! The rate limit of `POST /runs`: a token bucket that holds up to `burst` requests and
//! refills at `per_second`. The decision is a pure function of the bucket and the time, so it
//! is tested without waiting; the endpoint keeps one bucket for all clients (the point is to
//! spare the systems the runs would call, whoever asks).

use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

/// Why a bucket cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error("the rate must be a positive number of requests per second, not {0}")]
    Rate(f64),
    #[error("the burst must be at least 1, not {0}")]
    Burst(u32),
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(per_second: f64, burst: u32) -> Result<TokenBucket, LimitError> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(LimitError::Rate(per_second));
        }
        if burst == 0 {
            return Err(LimitError::Burst(burst));
        }
        Ok(TokenBucket {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        })
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3).expect("bucket");
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let wait = bucket.take(start).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_seconds(wait), 1);
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        assert_eq!(bucket.take(later), Ok(()));
        assert!(bucket.take(later).is_err());
        // A long pause refills up to the burst, not beyond.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(bucket.take(much_later), Ok(()));
        }
        assert!(bucket.take(much_later).is_err());
    }

    #[test]
    fn slow_rates_ask_for_longer_waits() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0.1, 1).expect("bucket");
        assert_eq!(bucket.take(now), Ok(()));
        let wait = bucket.take(now).expect_err("empty");
        assert_eq!(retry_after_seconds(wait), 10);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn nonsense_settings_are_refused() {
        assert!(TokenBucket::new(0.0, 1).is_err());
        assert!(TokenBucket::new(f64::NAN, 1).is_err());
        assert!(TokenBucket::new(-1.0, 1).is_err());
        assert!(TokenBucket::new(1.0, 0).is_err());
    }
}
