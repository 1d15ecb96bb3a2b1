//! Duration flags, one syntax everywhere: `250ms`, `2s`, `1m` (humantime), in whole
//! milliseconds. The older `-ms` flags keep taking a bare number of milliseconds too.

use std::time::Duration;

/// What every duration flag's error says it expects.
const EXPECTED: &str = "expected a duration such as 250ms, 2s or 1m";

/// A duration flag's value in milliseconds; a bare number is refused (its unit would be a guess).
pub fn millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.parse::<f64>().is_ok() {
        return Err(format!(
            "{EXPECTED}: a number needs a unit, e.g. {text}ms or {text}s"
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|_| format!("{EXPECTED}, got `{text}`"))?;
    whole_millis(duration, text)
}

/// An old `-ms` flag's value: a bare number of milliseconds, or a duration.
pub fn millis_or_duration(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) => Ok(ms),
        Err(_) => millis(text),
    }
}

/// A latency range `MIN,MAX` of durations (`10ms,200ms`); one duration means exactly that.
pub fn range(text: &str) -> Result<[u64; 2], String> {
    range_of(text, millis)
}

/// An old `-ms` range flag's value: `MIN,MAX` in bare milliseconds (`10,200`) or durations.
pub fn range_millis_or_duration(text: &str) -> Result<[u64; 2], String> {
    range_of(text, millis_or_duration)
}

fn range_of(text: &str, one: fn(&str) -> Result<u64, String>) -> Result<[u64; 2], String> {
    let [min, max] = match text.split_once(',') {
        Some((min, max)) => [one(min)?, one(max)?],
        None => {
            let exact = one(text)?;
            [exact, exact]
        }
    };
    if max < min {
        return Err(format!(
            "MIN,MAX: the max ({max} ms) is below the min ({min} ms); e.g. 10ms,200ms"
        ));
    }
    Ok([min, max])
}

fn whole_millis(duration: Duration, text: &str) -> Result<u64, String> {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!("`{text}` is not a whole number of milliseconds"));
    }
    u64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_old_flags_take_bare_milliseconds() {
        assert_eq!(millis("250ms"), Ok(250));
        assert_eq!(millis("2s"), Ok(2000));
        assert_eq!(millis("1m"), Ok(60_000));
        assert!(millis("1000").unwrap_err().contains("1000ms"));
        assert!(millis("soon").is_err());
        assert!(millis("1500us").is_err());
        assert_eq!(millis_or_duration("1000"), Ok(1000));
        assert_eq!(millis_or_duration("1s"), Ok(1000));
    }

    #[test]
    fn ranges_are_ordered() {
        assert_eq!(range("10ms,200ms"), Ok([10, 200]));
        assert_eq!(range("0s,0s"), Ok([0, 0]));
        assert_eq!(range("50ms"), Ok([50, 50]));
        assert!(range("10,200").is_err());
        assert_eq!(range_millis_or_duration("10,200"), Ok([10, 200]));
        assert!(range_millis_or_duration("50,10").unwrap_err().contains("below"));
    }
}
