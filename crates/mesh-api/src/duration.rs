//! Durations as Istio and Gateway API write them: Go / protobuf-JSON duration strings
//! (`"1s"`, `"0.5s"`, `"250ms"`, `"1m30s"`, `"1h"`, `"10us"`, `"5ns"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration parsed from a Go/protobuf duration string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: empty")]
    Empty(String),
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. \"1.5s\""
    )]
    Malformed(String),
    #[error("invalid duration {0:?}: missing unit (ns, us, ms, s, m, h)")]
    MissingUnit(String),
    #[error("invalid duration {0:?}: unknown unit {1:?} (expected ns, us, ms, s, m, h)")]
    UnknownUnit(String, String),
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let own = || text.to_string();
        let s = text.trim();
        if s.is_empty() {
            return Err(DurationError::Empty(own()));
        }
        let s = match s.strip_prefix('-') {
            // "-0s" is still zero for Go, but a leading minus is a mistake in config either way.
            Some(_) => return Err(DurationError::Negative(own())),
            None => s.strip_prefix('+').unwrap_or(s),
        };
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        if s.contains(char::is_whitespace) {
            return Err(DurationError::Malformed(own()));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: u128 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let int_part = &s[start..i];
            let mut frac_part = "";
            if i < bytes.len() && bytes[i] == b'.' {
                i += 1;
                let fs = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                frac_part = &s[fs..i];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(DurationError::Malformed(own()));
            }
            let us = i;
            while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
                i += 1;
            }
            let unit = &s[us..i];
            if unit.is_empty() {
                return Err(DurationError::MissingUnit(own()));
            }
            let scale =
                unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit(own(), unit.to_string()))?;
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| DurationError::Overflow(own()))?
            };
            let mut nanos = int.checked_mul(scale).ok_or_else(|| DurationError::Overflow(own()))?;
            // Fractions: keep at most 30 digits so the arithmetic cannot overflow; finer is noise.
            let frac = &frac_part[..frac_part.len().min(30)];
            if !frac.is_empty() {
                let num: u128 = frac.parse().map_err(|_| DurationError::Malformed(own()))?;
                let den = 10u128.pow(frac.len() as u32);
                nanos += num.saturating_mul(scale) / den;
            }
            total = total.checked_add(nanos).ok_or_else(|| DurationError::Overflow(own()))?;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow(own()))?;
        Ok(Duration(std::time::Duration::new(secs, (total % 1_000_000_000) as u32)))
    }
}

impl fmt::Display for Duration {
    /// Protobuf-JSON form: seconds with up to 9 fractional digits, e.g. `1.5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{secs}.{}s", frac.trim_end_matches('0'))
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn p(s: &str) -> Result<Std, DurationError> {
        s.parse::<Duration>().map(|d| d.0)
    }

    #[test]
    fn parses_go_and_protobuf_forms() {
        assert_eq!(p("1s").unwrap(), Std::from_secs(1));
        assert_eq!(p("0.5s").unwrap(), Std::from_millis(500));
        assert_eq!(p("250ms").unwrap(), Std::from_millis(250));
        assert_eq!(p("1m30s").unwrap(), Std::from_secs(90));
        assert_eq!(p("1h").unwrap(), Std::from_secs(3600));
        assert_eq!(p("10us").unwrap(), Std::from_micros(10));
        assert_eq!(p("5ns").unwrap(), Std::from_nanos(5));
        assert_eq!(p("1.5h").unwrap(), Std::from_secs(5400));
        assert_eq!(p("0").unwrap(), Std::ZERO);
        assert_eq!(p(".5s").unwrap(), Std::from_millis(500));
    }

    #[test]
    fn rejects_bad_forms_precisely() {
        assert_eq!(
            p("-1s").unwrap_err().to_string(),
            "invalid duration \"-1s\": negative durations are not allowed"
        );
        assert!(matches!(p("10").unwrap_err(), DurationError::MissingUnit(_)));
        assert!(matches!(p("10d").unwrap_err(), DurationError::UnknownUnit(_, u) if u == "d"));
        assert!(matches!(p("s").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(p("10 seconds").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(p("").unwrap_err(), DurationError::Empty(_)));
        assert!(p("1..5s").is_err());
        assert!(matches!(p("99999999999999999999999h").unwrap_err(), DurationError::Overflow(_)));
    }

    #[test]
    fn displays_as_protobuf_json() {
        assert_eq!(Duration(Std::from_millis(1500)).to_string(), "1.5s");
        assert_eq!(Duration(Std::from_secs(2)).to_string(), "2s");
        assert_eq!(Duration(Std::from_nanos(5)).to_string(), "0.000000005s");
    }
}

/// Durations in the processes' own configuration files and flags (not in Istio objects): a Go
/// duration (`250ms`, `1h30m`), a bare number of seconds (`45`), or whole days (`7d`), which
/// certificate lifetimes want and Go durations lack.
pub fn parse_config(text: &str) -> Result<std::time::Duration, DurationError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    if let Some(days) = t.strip_suffix('d').and_then(|d| d.parse::<u64>().ok()) {
        return days
            .checked_mul(86_400)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| DurationError::Overflow(text.to_string()));
    }
    t.parse::<Duration>().map(|d| d.0)
}

/// `#[serde(with = "mesh_api::duration::config")]` for `std::time::Duration` fields of the
/// processes' configuration: reads what [`parse_config`] reads, writes the [`Duration`] form
/// (so `/config_dump` shows `1.5s`).
pub mod config {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::Duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(std::time::Duration::from_secs(s)),
            Raw::Text(t) => super::parse_config(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn config_durations() {
        assert_eq!(parse_config("24h"), Ok(Std::from_secs(86_400)));
        assert_eq!(parse_config("1h30m"), Ok(Std::from_secs(5_400)));
        assert_eq!(parse_config("7d"), Ok(Std::from_secs(7 * 86_400)));
        assert_eq!(parse_config("45"), Ok(Std::from_secs(45)));
        assert_eq!(parse_config("250ms"), Ok(Std::from_millis(250)));
        assert!(matches!(parse_config("5x"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(parse_config("-5s"), Err(DurationError::Negative(..))));
        assert!(matches!(parse_config("99999999999999999d"), Err(DurationError::Overflow(..))));
    }
}
