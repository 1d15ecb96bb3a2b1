//! The providers' rate-limit headers, from the quota's gauges at the moment of the answer.
//!
//! - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets relative, in Go's
//!   duration format (`1s`, `6m0s`, `17ms`, `1.5s`), rounded up to the millisecond.
//! - Anthropic: `anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,
//!   remaining,reset}`, resets absolute RFC 3339 times rounded up to the second; `tokens-*` is
//!   whichever of input and output has the less remaining, as "the most restrictive" limit.
//! - Both: `retry-after` (whole seconds, rounded up) on 429; OpenAI also `retry-after-ms`.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::quota::{Gauge, Gauges};

/// Go's `time.Duration.String()` of `d` rounded up to whole milliseconds.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let seconds = if frac == 0 {
        s.to_string()
    } else {
        let fraction = format!("{frac:03}");
        format!("{s}.{}", fraction.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `now + d` as RFC 3339 in UTC, rounded up to the second (`2026-12-06T21:40:59Z`).
pub(crate) fn rfc3339_after(now: SystemTime, d: Duration) -> String {
    let at = now + d;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_nanos().div_ceil(1_000_000_000);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// Whole seconds, rounded up: waiting this long is enough.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

fn put(headers: &mut HeaderMap, name: String, value: String) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        headers.insert(name, value);
    }
}

/// OpenAI's six headers (those of the limits configured).
pub(crate) fn openai(headers: &mut HeaderMap, gauges: &Gauges) {
    for (suffix, gauge) in [("requests", gauges.requests), ("tokens", gauges.tokens)] {
        if let Some(Gauge {
            limit,
            remaining,
            reset,
        }) = gauge
        {
            put(headers, format!("x-ratelimit-limit-{suffix}"), limit.to_string());
            put(
                headers,
                format!("x-ratelimit-remaining-{suffix}"),
                remaining.to_string(),
            );
            put(headers, format!("x-ratelimit-reset-{suffix}"), go_duration(reset));
        }
    }
}

/// Anthropic's headers (those of the limits configured), resets after `now`.
pub(crate) fn anthropic(headers: &mut HeaderMap, gauges: &Gauges, now: SystemTime) {
    let tightest = match (gauges.input, gauges.output) {
        (Some(i), Some(o)) => Some(if o.remaining < i.remaining { o } else { i }),
        (i, o) => i.or(o),
    };
    for (part, gauge) in [
        ("requests", gauges.requests),
        ("input-tokens", gauges.input),
        ("output-tokens", gauges.output),
        ("tokens", tightest),
    ] {
        if let Some(Gauge {
            limit,
            remaining,
            reset,
        }) = gauge
        {
            put(
                headers,
                format!("anthropic-ratelimit-{part}-limit"),
                limit.to_string(),
            );
            put(
                headers,
                format!("anthropic-ratelimit-{part}-remaining"),
                remaining.to_string(),
            );
            put(
                headers,
                format!("anthropic-ratelimit-{part}-reset"),
                rfc3339_after(now, reset),
            );
        }
    }
}

/// `retry-after` (and, for OpenAI, `retry-after-ms`) for a refusal that a wait can cure.
pub(crate) fn retry_after(headers: &mut HeaderMap, wait: Duration, with_ms: bool) {
    headers.insert("retry-after", HeaderValue::from(ceil_secs(wait)));
    if with_ms {
        let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        headers.insert("retry-after-ms", HeaderValue::from(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_go_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms", "rounded up");
        assert_eq!(go_duration(ms(17)), "17ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(2383)), "2.383s");
        assert_eq!(go_duration(ms(60_000)), "1m0s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
    }

    #[test]
    fn anthropic_resets_are_rfc3339_rounded_up() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_593_259);
        assert_eq!(rfc3339_after(at, Duration::ZERO), "2026-12-06T21:40:59Z");
        assert_eq!(
            rfc3339_after(at, Duration::from_millis(1)),
            "2026-12-06T21:41:00Z"
        );
    }
}
