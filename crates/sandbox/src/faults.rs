//! Fault injection for tests and demos: which failures the simulators inject, how often,
//! on which systems, and how much latency every request gets.
//!
//! The text form is what `tether sandbox --faults` takes:
//! `rate=0.1,kinds=429+500+timeout,latency=200ms[,systems=keap+salesforce][,stall=30s]`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One kind of injected failure. Each simulator answers it in its own system's style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Throttled: 429 with `Retry-After` (Salesforce: 403 `REQUEST_LIMIT_EXCEEDED`).
    TooManyRequests,
    /// 500 internal server error; the request is not applied.
    ServerError,
    /// 503 service unavailable; the request is not applied.
    Unavailable,
    /// The server stalls for the stall time, then answers 504; the request is not applied.
    Timeout,
    /// The request is applied, but the answer is lost and replaced by a 502.
    LostResponse,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::TooManyRequests,
        FaultKind::ServerError,
        FaultKind::Unavailable,
        FaultKind::Timeout,
        FaultKind::LostResponse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::TooManyRequests => "429",
            FaultKind::ServerError => "500",
            FaultKind::Unavailable => "503",
            FaultKind::Timeout => "timeout",
            FaultKind::LostResponse => "lost",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Probability (0 to 1) that a request gets a fault.
    pub rate: f64,
    /// The kinds to choose from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// Added to every request before it is handled.
    pub latency: Duration,
    /// How long a `timeout` fault stalls before its 504.
    pub stall: Duration,
    /// Systems that get faults; empty means all.
    pub systems: Vec<String>,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: Vec::new(),
            latency: Duration::ZERO,
            stall: Duration::from_secs(30),
            systems: Vec::new(),
        }
    }
}

impl FaultSpec {
    /// True when the spec can never change a request.
    pub fn is_none(&self) -> bool {
        (self.rate <= 0.0 || self.kinds.is_empty()) && self.latency.is_zero()
    }

    pub fn applies_to(&self, system: &str) -> bool {
        self.systems.is_empty() || self.systems.iter().any(|name| name == system)
    }

    /// Draws the fault (if any) for one request.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> Option<FaultKind> {
        if self.kinds.is_empty() || self.rate <= 0.0 || rng.f64() >= self.rate {
            return None;
        }
        self.kinds.get(rng.usize(..self.kinds.len())).copied()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultSpecError {
    #[error("fault spec item `{0}` is not `key=value`")]
    NotKeyValue(String),
    #[error("unknown fault spec key `{0}` (expected rate, kinds, latency, stall or systems)")]
    UnknownKey(String),
    #[error("fault rate `{0}` is not a number between 0 and 1")]
    BadRate(String),
    #[error("unknown fault kind `{0}` (expected 429, 500, 503, timeout or lost)")]
    BadKind(String),
    #[error("duration `{0}` is not a number followed by ms, s or m")]
    BadDuration(String),
    #[error(
        "unknown system `{0}` (expected customcrm, customerp, customwebshop, keap or salesforce)"
    )]
    BadSystem(String),
    #[error("fault rate {0} is set but no kinds are given")]
    RateWithoutKinds(f64),
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = FaultSpec::default();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| FaultSpecError::NotKeyValue(item.to_string()))?;
            let value = value.trim();
            match key.trim() {
                "rate" => {
                    spec.rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|rate| (0.0..=1.0).contains(rate))
                        .ok_or_else(|| FaultSpecError::BadRate(value.to_string()))?;
                }
                "kinds" => {
                    spec.kinds = value
                        .split('+')
                        .map(|name| {
                            FaultKind::ALL
                                .into_iter()
                                .find(|kind| kind.name() == name.trim())
                                .ok_or_else(|| FaultSpecError::BadKind(name.to_string()))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "latency" => spec.latency = parse_duration(value)?,
                "stall" => spec.stall = parse_duration(value)?,
                "systems" => {
                    spec.systems = value
                        .split('+')
                        .map(|name| {
                            let name = name.trim();
                            if crate::SYSTEMS.contains(&name) {
                                Ok(name.to_string())
                            } else {
                                Err(FaultSpecError::BadSystem(name.to_string()))
                            }
                        })
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(FaultSpecError::UnknownKey(other.to_string())),
            }
        }
        if spec.rate > 0.0 && spec.kinds.is_empty() {
            return Err(FaultSpecError::RateWithoutKinds(spec.rate));
        }
        Ok(spec)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|kind| kind.name()).collect();
        write!(
            f,
            "rate={},kinds={},latency={}ms,stall={}ms",
            self.rate,
            kinds.join("+"),
            self.latency.as_millis(),
            self.stall.as_millis()
        )?;
        if !self.systems.is_empty() {
            write!(f, ",systems={}", self.systems.join("+"))?;
        }
        Ok(())
    }
}

/// Parses `200ms`, `1.5s`, `2m` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, FaultSpecError> {
    let bad = || FaultSpecError::BadDuration(text.to_string());
    let text = text.trim();
    let (number, scale_ms) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60_000.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_micros((value * scale_ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let spec: FaultSpec = "rate=0.1,kinds=429+500+timeout,latency=200ms"
            .parse()
            .expect("valid spec");
        assert_eq!(spec.rate, 0.1);
        assert_eq!(
            spec.kinds,
            vec![
                FaultKind::TooManyRequests,
                FaultKind::ServerError,
                FaultKind::Timeout
            ]
        );
        assert_eq!(spec.latency, Duration::from_millis(200));
        assert!(spec.applies_to("keap"));
        let round_trip: FaultSpec = spec.to_string().parse().expect("display form parses");
        assert_eq!(round_trip, spec);
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let error = |text: &str| {
            text.parse::<FaultSpec>()
                .expect_err("invalid spec")
                .to_string()
        };
        assert!(error("rate=2,kinds=500").contains("between 0 and 1"));
        assert!(error("rate=0.5,kinds=418").contains("unknown fault kind `418`"));
        assert!(error("latency=fast").contains("duration `fast`"));
        assert!(error("speed=1").contains("unknown fault spec key `speed`"));
        assert!(error("rate=0.5").contains("no kinds"));
        assert!(error("systems=sap").contains("unknown system `sap`"));
    }

    #[test]
    fn a_full_rate_always_draws_and_zero_never_does() {
        let mut rng = fastrand::Rng::with_seed(7);
        let always: FaultSpec = "rate=1,kinds=503".parse().expect("valid spec");
        let never = FaultSpec::default();
        for _ in 0..50 {
            assert_eq!(always.draw(&mut rng), Some(FaultKind::Unavailable));
            assert_eq!(never.draw(&mut rng), None);
        }
    }
}
