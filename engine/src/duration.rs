//! Human durations: `500ms`, `2s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// Parses `1h30m`, `90s`, `250ms`. A bare number is refused: a unit is required,
/// because `timeout: 5` is ambiguous.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{s}` is not a duration (expected a number then a unit, like 30s, 5m or 1h30m)"));
        }
        let n: u128 = rest[..digits].parse().map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{s}` has no unit (write {n}s, {n}m or {n}h)")),
            other => {
                return Err(format!("`{s}`: unknown unit `{other}` (use ms, s, m, h or d)"));
            }
        };
        total = total.saturating_add(n.saturating_mul(ms));
        rest = &rest[unit_len..];
    }
    u64::try_from(total).map(Duration::from_millis).map_err(|_| format!("`{s}` is too long"))
}

/// Formats compactly: `2s`, `5m`, `6m12s`, `1h2m`, `350ms`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => {
            let tenths = (ms % 1_000) / 100;
            if tenths == 0 || s >= 10 { format!("{s}s") } else { format!("{s}.{tenths}s") }
        }
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// A `Duration` that (de)serializes as a human string, for step parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn refuses_numbers_without_units_and_unknown_units() {
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse("5 minutes").unwrap_err().contains("unknown unit"));
        assert!(parse("m5").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_secs(372)), "6m12s");
        assert_eq!(format(Duration::from_millis(2_400)), "2.4s");
        assert_eq!(format(Duration::from_millis(40)), "40ms");
        assert_eq!(format(Duration::from_secs(3_720)), "1h02m");
    }
}
