//! Durations (`5s`, `10m`, `1h`, `250ms`) and byte sizes (`16MB`, `64kB`) as written in
//! the config; a bare number means seconds or bytes.

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Splits `"10ms"` into (10, "ms").
fn split_unit(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let idx = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let n: f64 = s[..idx].parse().ok()?;
    Some((n, s[idx..].trim().to_ascii_lowercase()))
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = split_unit(s)?;
    let secs = match unit.as_str() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "us" => n / 1_000_000.0,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

pub fn parse_bytes(s: &str) -> Option<u64> {
    let (n, unit) = split_unit(s)?;
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" | "k" | "kib" => 1 << 10,
        "mb" | "m" | "mib" => 1 << 20,
        "gb" | "g" | "gib" => 1 << 30,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(Dur(Duration::from_secs(n))),
            NumOrStr::Str(s) => parse_duration(&s)
                .map(Dur)
                .ok_or_else(|| de::Error::custom(format!("invalid duration \"{s}\" (use e.g. 500ms, 5s, 10m, 1h)"))),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(ByteSize(n)),
            NumOrStr::Str(s) => {
                parse_bytes(&s).map(ByteSize).ok_or_else(|| de::Error::custom(format!("invalid size \"{s}\" (use e.g. 64kB, 16MB, 1GB)")))
            }
        }
    }
}

impl Dur {
    /// `None` for zero: a timeout that is off.
    pub fn nonzero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("16MB"), Some(16 << 20));
        assert_eq!(parse_bytes("64kB"), Some(64 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("1XB"), None);
    }
}
