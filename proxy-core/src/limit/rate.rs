//! Rates as nginx writes them: `"10r/s"`, `"30r/m"`.

use std::fmt;
use std::time::Duration;

/// A request rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period.
    pub count: u32,
    /// The period: one second or one minute.
    pub per: Duration,
}

impl Rate {
    /// Parses `"10r/s"` or `"30r/m"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "expected a rate like \"10r/s\" or \"30r/m\"";
        let (count, unit) = text
            .trim()
            .split_once("r/")
            .ok_or_else(|| format!("invalid rate `{text}`: {hint}"))?;
        let count: u32 = count
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid rate `{text}`: {hint}, above 0"))?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(format!("invalid rate `{text}`: {hint}")),
        };
        Ok(Self { count, per })
    }

    /// Time between two requests at this rate, in nanoseconds (at least 1).
    pub fn emission_interval_ns(&self) -> i64 {
        let per = i64::try_from(self.per.as_nanos()).unwrap_or(i64::MAX);
        (per / i64::from(self.count)).max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per.as_secs() == 60 { "m" } else { "s" };
        write!(f, "{}r/{unit}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_rates() {
        assert_eq!(
            Rate::parse("10r/s").unwrap().emission_interval_ns(),
            100_000_000
        );
        assert_eq!(
            Rate::parse("30r/m").unwrap().emission_interval_ns(),
            2_000_000_000
        );
        assert_eq!(Rate::parse("30r/m").unwrap().to_string(), "30r/m");
        for bad in ["10", "0r/s", "10r/h", "r/s", "-1r/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }
}
