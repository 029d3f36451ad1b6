//! Human units in config values: durations ("30s", "1d") and byte sizes ("512m", "200MiB").

use std::time::Duration;

/// Parses a duration such as `"30s"`, `"1m30s"`, `"250ms"` or `"1d"`.
///
/// A bare number is rejected: a unit must always be written, so `timeout = "30"` is never
/// silently read as 30 seconds or 30 milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write a number with a unit, e.g. \"30s\"".into());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration `{trimmed}` has no unit; write e.g. \"{trimmed}s\" or \"{trimmed}ms\""
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration `{trimmed}`: {e} (examples: \"500ms\", \"30s\", \"5m\", \"1d\")")
    })
}

/// Parses a byte size such as `"512m"`, `"200MiB"`, `"10 MB"` or `"4096"` (bytes).
///
/// Single-letter units follow nginx (`k`, `m`, `g` are powers of 1024), as do the IEC units
/// (`KiB`, `MiB`, `GiB`); `KB`, `MB` and `GB` are decimal (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size `{trimmed}`: unknown unit `{unit}` (use b, k, m, g, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid size `{trimmed}`: expected a number followed by a unit, e.g. \"512m\"")
    })?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size `{trimmed}`: out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_follow_nginx_and_iec() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("200MiB"), Ok(200 << 20));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("-1m").is_err());
    }
}
