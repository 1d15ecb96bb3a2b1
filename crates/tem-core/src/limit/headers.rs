//! Rate-limit headers of every dialect, read into one shape: for each thing a limit counts
//! (requests, tokens, input tokens, output tokens), the quota, what is left of it, and when it is
//! whole again; plus how long a refusal asks to wait.
//!
//! - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets relative in Go's
//!   duration format (`1s`, `6m0s`, `1h2m3.5s`, `17ms`).
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
//!   remaining,reset}`, resets absolute RFC 3339 times.
//! - IETF: `RateLimit-Policy: "p";q=100;w=60` with `RateLimit: "p";r=50;t=30`, and the earlier
//!   drafts' `RateLimit-Policy: 100;w=60` and `RateLimit-{Limit,Remaining,Reset}` (seconds).
//! - Common: `X-RateLimit-{Limit,Remaining,Reset}` (a reset over a day is an epoch time, in
//!   seconds or, past 10^12, milliseconds); Mistral's `x-ratelimit-{limit,remaining}-tokens-minute`.
//! - `retry-after` (seconds or an HTTP date) and `retry-after-ms`.
//!
//! A header that is missing or does not parse is ignored: a response never fails because of
//! what it says about limits. Where dialects overlap, the provider-specific one wins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    Requests,
    /// Input and output tokens together (OpenAI's TPM).
    Tokens,
    /// Prompt tokens (Anthropic's ITPM).
    InputTokens,
    /// Answer tokens (Anthropic's OTPM).
    OutputTokens,
}

impl Meter {
    /// Every meter, in index order.
    pub const ALL: [Meter; 4] = [
        Meter::Requests,
        Meter::Tokens,
        Meter::InputTokens,
        Meter::OutputTokens,
    ];

    /// Its position in [`Meter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in reports (`requests`, `tokens`, `input_tokens`, `output_tokens`).
    pub fn as_str(self) -> &'static str {
        match self {
            Meter::Requests => "requests",
            Meter::Tokens => "tokens",
            Meter::InputTokens => "input_tokens",
            Meter::OutputTokens => "output_tokens",
        }
    }
}

/// One limit as a response states it; any part may be missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The quota per window.
    pub limit: Option<u64>,
    /// What is left of it now.
    pub remaining: Option<u64>,
    /// Until the quota is whole again.
    pub reset: Option<Duration>,
    /// The window's length, when the dialect states it (IETF `w=`, Mistral's `-minute`).
    pub window: Option<Duration>,
}

impl Reading {
    fn is_empty(&self) -> bool {
        *self == Reading::default()
    }

    /// Fills what `self` lacks from `other`.
    fn or(self, other: Reading) -> Reading {
        Reading {
            limit: self.limit.or(other.limit),
            remaining: self.remaining.or(other.remaining),
            reset: self.reset.or(other.reset),
            window: self.window.or(other.window),
        }
    }
}

/// Everything a response said about limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    readings: [Option<Reading>; 4],
    /// How long the response asks to wait before the next request.
    pub retry_after: Option<Duration>,
}

impl RateLimitHeaders {
    /// Reads `headers`, resolving absolute times against the system clock.
    pub fn parse(headers: &HeaderMap) -> Self {
        Self::parse_at(headers, SystemTime::now())
    }

    /// Reads `headers` as of `now` (absolute resets and dates are measured from it).
    pub fn parse_at(headers: &HeaderMap, now: SystemTime) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let mut parsed = RateLimitHeaders {
            retry_after: retry_after(&text, now),
            ..RateLimitHeaders::default()
        };
        for (meter, part) in [
            (Meter::Requests, "requests"),
            (Meter::Tokens, "tokens"),
            (Meter::InputTokens, "input-tokens"),
            (Meter::OutputTokens, "output-tokens"),
        ] {
            let anthropic = Reading {
                limit: text(&format!("anthropic-ratelimit-{part}-limit")).and_then(count),
                remaining: text(&format!("anthropic-ratelimit-{part}-remaining")).and_then(count),
                reset: text(&format!("anthropic-ratelimit-{part}-reset")).and_then(|v| until_rfc3339(v, now)),
                window: None,
            };
            parsed.merge(meter, anthropic);
        }
        for (meter, part) in [(Meter::Requests, "requests"), (Meter::Tokens, "tokens")] {
            let openai = Reading {
                limit: text(&format!("x-ratelimit-limit-{part}")).and_then(count),
                remaining: text(&format!("x-ratelimit-remaining-{part}")).and_then(count),
                reset: text(&format!("x-ratelimit-reset-{part}")).and_then(go_duration),
                window: None,
            };
            parsed.merge(meter, openai);
        }
        let mistral = Reading {
            limit: text("x-ratelimit-limit-tokens-minute").and_then(count),
            remaining: text("x-ratelimit-remaining-tokens-minute").and_then(count),
            reset: None,
            window: Some(Duration::from_secs(60)),
        };
        if mistral.limit.is_some() || mistral.remaining.is_some() {
            parsed.merge(Meter::Tokens, mistral);
        }
        parsed.merge(Meter::Requests, ietf(&text));
        for prefix in ["ratelimit", "x-ratelimit"] {
            let common = Reading {
                limit: text(&format!("{prefix}-limit")).and_then(count),
                remaining: text(&format!("{prefix}-remaining")).and_then(count),
                reset: text(&format!("{prefix}-reset")).and_then(|v| reset_seconds(v, now)),
                window: None,
            };
            parsed.merge(Meter::Requests, common);
        }
        parsed
    }

    /// What the response said about `meter`, if anything.
    pub fn get(&self, meter: Meter) -> Option<Reading> {
        self.readings[meter.index()]
    }

    /// Whether the response stated any limit at all.
    pub fn states_limits(&self) -> bool {
        self.readings.iter().any(Option::is_some)
    }

    /// Sets what the response said about `meter` (for handlers that read other sources).
    pub fn set(&mut self, meter: Meter, reading: Reading) {
        self.readings[meter.index()] = (!reading.is_empty()).then_some(reading);
    }

    fn merge(&mut self, meter: Meter, reading: Reading) {
        if reading.is_empty() {
            return;
        }
        let slot = &mut self.readings[meter.index()];
        *slot = Some(slot.map_or(reading, |have| have.or(reading)));
    }
}

/// A non-negative whole number (a quota or what is left of it).
fn count(text: &str) -> Option<u64> {
    text.parse().ok()
}

/// `retry-after-ms` (more precise, so it wins), else `retry-after` in seconds or as an HTTP date.
fn retry_after<'a>(text: &impl Fn(&str) -> Option<&'a str>, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The IETF drafts: `RateLimit-Policy` (quota and window) with `RateLimit` (remaining and reset),
/// matched by policy name; of several, the one with the least left.
fn ietf<'a>(text: &impl Fn(&str) -> Option<&'a str>) -> Reading {
    let policies: Vec<Item> = text("ratelimit-policy")
        .map(|v| v.split(',').filter_map(Item::parse).collect())
        .unwrap_or_default();
    let states: Vec<Item> = text("ratelimit")
        .map(|v| v.split(',').filter_map(Item::parse).collect())
        .unwrap_or_default();
    let reading = |policy: Option<&Item>, state: Option<&Item>| Reading {
        limit: policy.and_then(|p| p.param("q").or(p.bare)),
        window: policy.and_then(|p| p.param("w")).map(Duration::from_secs),
        remaining: state.and_then(|s| s.param("r")),
        reset: state.and_then(|s| s.param("t")).map(Duration::from_secs),
    };
    if states.is_empty() {
        // Only policies: the strictest per second.
        return reading(
            policies
                .iter()
                .min_by(|a, b| a.per_second().total_cmp(&b.per_second())),
            None,
        );
    }
    let tightest = states.iter().min_by_key(|s| s.param("r").unwrap_or(u64::MAX));
    let policy = tightest.and_then(|s| policies.iter().find(|p| p.name.is_some() && p.name == s.name));
    reading(policy.or_else(|| policies.first()), tightest)
}

/// One item of a structured-field list: `"name";k=v;…`, or an earlier draft's `100;w=60`.
#[derive(Debug)]
struct Item {
    name: Option<String>,
    bare: Option<u64>,
    params: Vec<(String, u64)>,
}

impl Item {
    fn parse(text: &str) -> Option<Item> {
        let mut parts = text.split(';').map(str::trim);
        let head = parts.next()?;
        let (name, bare) = match head.strip_prefix('"').and_then(|h| h.strip_suffix('"')) {
            Some(name) => (Some(name.to_owned()), None),
            None => (None, Some(head.parse().ok()?)),
        };
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect();
        Some(Item { name, bare, params })
    }

    fn param(&self, key: &str) -> Option<u64> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn per_second(&self) -> f64 {
        let quota = self.param("q").or(self.bare).unwrap_or(u64::MAX) as f64;
        quota / self.param("w").unwrap_or(1).max(1) as f64
    }
}

/// A reset in seconds, or an epoch time (seconds past a day's worth, milliseconds past 10^12).
fn reset_seconds(text: &str, now: SystemTime) -> Option<Duration> {
    let n: f64 = text.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let secs = if n > 1e12 {
        n / 1000.0 - now
    } else if n > 86_400.0 {
        n - now
    } else {
        n
    };
    Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)))
}

/// Go's `time.Duration` text: `1h2m3.5s`, `6m0s`, `17ms`, `250us`, `0s`.
pub fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3_600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total <= 86_400.0 * 366.0).then(|| Duration::from_secs_f64(total))
}

/// The time from `now` until an RFC 3339 instant (`2026-12-06T21:40:59Z`, `…59.5+01:00`);
/// zero if it has passed.
pub fn until_rfc3339(text: &str, now: SystemTime) -> Option<Duration> {
    let at = rfc3339_unix(text)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some(Duration::from_secs_f64((at - now).clamp(0.0, 86_400.0 * 366.0)))
}

/// Seconds since the Unix epoch of an RFC 3339 time.
fn rfc3339_unix(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after) = rest.strip_prefix('.') {
        let end = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        if end == 0 {
            return None;
        }
        fraction = format!("0.{}", &after[..end]).parse().ok()?;
        rest = &after[end..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    /// 2026-12-06T21:40:00Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_593_200)
    }

    fn parse(pairs: &[(&'static str, &str)]) -> RateLimitHeaders {
        RateLimitHeaders::parse_at(&headers(pairs), now())
    }

    fn reading(limit: u64, remaining: u64, reset_ms: u64) -> Option<Reading> {
        Some(Reading {
            limit: Some(limit),
            remaining: Some(remaining),
            reset: Some(Duration::from_millis(reset_ms)),
            window: None,
        })
    }

    #[test]
    fn go_durations_parse_as_go_writes_them() {
        let ms = |n| Some(Duration::from_millis(n));
        let cases = [
            ("0s", ms(0)),
            ("0", ms(0)),
            ("1s", ms(1000)),
            ("17ms", ms(17)),
            ("1.5s", ms(1500)),
            ("2.383s", ms(2383)),
            ("6m0s", ms(360_000)),
            ("1m30s", ms(90_000)),
            ("1h2m3s", ms(3_723_000)),
            ("1h2m3.5s", ms(3_723_500)),
            ("250us", Some(Duration::from_micros(250))),
            ("", None),
            ("s", None),
            ("5", None),
            ("1x", None),
            ("-1s", None),
            ("1.2.3s", None),
        ];
        for (text, want) in cases {
            assert_eq!(go_duration(text), want, "{text:?}");
        }
    }

    #[test]
    fn rfc3339_times_become_waits_from_now() {
        let secs = |n| Some(Duration::from_secs(n));
        let cases = [
            ("2026-12-06T21:40:59Z", secs(59)),
            ("2026-12-06T21:41:00.5Z", Some(Duration::from_millis(60_500))),
            ("2026-12-06T22:40:59+01:00", secs(59)),
            ("2026-12-06T20:40:59-01:00", secs(59)),
            ("2026-12-06T21:39:00Z", secs(0)),
            ("2026-12-07T00:00:00Z", secs(8400)),
            ("2026-13-06T21:40:59Z", None),
            ("2026-12-06 21:40:59", None),
            ("yesterday", None),
            ("2026-12-06T21:40:59", None),
        ];
        for (text, want) in cases {
            assert_eq!(until_rfc3339(text, now()), want, "{text:?}");
        }
    }

    #[test]
    fn openai_headers_give_requests_and_tokens() {
        let h = parse(&[
            ("x-ratelimit-limit-requests", "3000"),
            ("x-ratelimit-remaining-requests", "2999"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-limit-tokens", "200000"),
            ("x-ratelimit-remaining-tokens", "199000"),
            ("x-ratelimit-reset-tokens", "1m0s"),
        ]);
        assert_eq!(h.get(Meter::Requests), reading(3000, 2999, 20));
        assert_eq!(h.get(Meter::Tokens), reading(200_000, 199_000, 60_000));
        assert_eq!(h.get(Meter::InputTokens), None);
        assert!(h.states_limits());
    }

    #[test]
    fn anthropic_headers_give_each_meter_apart() {
        let h = parse(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2026-12-06T21:40:02Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
            ("anthropic-ratelimit-input-tokens-reset", "2026-12-06T21:41:00Z"),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            ("anthropic-ratelimit-output-tokens-reset", "2026-12-06T21:40:00Z"),
            ("anthropic-ratelimit-tokens-limit", "8000"),
            ("anthropic-ratelimit-tokens-remaining", "8000"),
            ("anthropic-ratelimit-tokens-reset", "2026-12-06T21:40:00Z"),
            ("retry-after", "3"),
        ]);
        assert_eq!(h.get(Meter::Requests), reading(50, 49, 2000));
        assert_eq!(h.get(Meter::InputTokens), reading(40_000, 39_000, 60_000));
        assert_eq!(h.get(Meter::OutputTokens), reading(8000, 8000, 0));
        assert_eq!(h.get(Meter::Tokens), reading(8000, 8000, 0));
        assert_eq!(h.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn ietf_policies_match_their_state_by_name() {
        let h = parse(&[
            ("ratelimit-policy", "\"burst\";q=100;w=1, \"day\";q=5000;w=86400"),
            ("ratelimit", "\"day\";r=12;t=3600, \"burst\";r=80;t=1"),
        ]);
        let want = Reading {
            limit: Some(5000),
            remaining: Some(12),
            reset: Some(Duration::from_secs(3600)),
            window: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(h.get(Meter::Requests), Some(want));
        // An earlier draft: bare quota, and the strictest per second when there is no state.
        let h = parse(&[("ratelimit-policy", "100;w=1, 1000;w=60")]);
        let r = h.get(Meter::Requests).unwrap();
        assert_eq!((r.limit, r.window), (Some(1000), Some(Duration::from_secs(60))));
        let h = parse(&[
            ("ratelimit-limit", "100"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "7"),
        ]);
        assert_eq!(h.get(Meter::Requests), reading(100, 0, 7000));
    }

    #[test]
    fn common_headers_take_seconds_or_epochs() {
        let epoch = now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let cases = [
            ("5".to_owned(), 5_000),
            ((epoch + 30).to_string(), 30_000),
            (((epoch + 30) * 1000).to_string(), 30_000),
            ((epoch - 30).to_string(), 0),
        ];
        for (reset, want_ms) in cases {
            let h = parse(&[
                ("x-ratelimit-limit", "60"),
                ("x-ratelimit-remaining", "10"),
                ("x-ratelimit-reset", &reset),
            ]);
            assert_eq!(h.get(Meter::Requests), reading(60, 10, want_ms), "{reset}");
        }
        let h = parse(&[
            ("x-ratelimit-limit-tokens-minute", "500000"),
            ("x-ratelimit-remaining-tokens-minute", "499000"),
        ]);
        let r = h.get(Meter::Tokens).unwrap();
        assert_eq!((r.limit, r.remaining), (Some(500_000), Some(499_000)));
        assert_eq!(r.window, Some(Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_in_every_form() {
        let cases = [
            (vec![("retry-after", "7")], Some(7_000)),
            (vec![("retry-after", "1.5")], Some(1_500)),
            (
                vec![("retry-after", "7"), ("retry-after-ms", "6250")],
                Some(6_250),
            ),
            (
                vec![("retry-after", "Sun, 06 Dec 2026 21:40:30 GMT")],
                Some(30_000),
            ),
            (vec![("retry-after", "Sun, 06 Dec 2026 21:39:30 GMT")], Some(0)),
            (vec![("retry-after", "soon")], None),
            (vec![("retry-after", "-3")], None),
            (vec![("retry-after-ms", "x"), ("retry-after", "2")], Some(2_000)),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                parse(&pairs).retry_after,
                want.map(Duration::from_millis),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn missing_or_malformed_headers_are_ignored() {
        let h = parse(&[]);
        assert!(!h.states_limits());
        assert_eq!(h.retry_after, None);
        let h = parse(&[
            ("x-ratelimit-limit-requests", "lots"),
            ("x-ratelimit-remaining-requests", "-1"),
            ("x-ratelimit-reset-requests", "soon"),
            ("anthropic-ratelimit-tokens-reset", "tomorrow"),
            ("ratelimit-policy", "\"x\";q=abc"),
            ("ratelimit", ";;;"),
        ]);
        assert!(!h.states_limits(), "{h:?}");
        // A partial reading keeps what parsed.
        let h = parse(&[
            ("x-ratelimit-remaining-tokens", "12"),
            ("x-ratelimit-reset-tokens", "bad"),
        ]);
        let r = h.get(Meter::Tokens).unwrap();
        assert_eq!((r.limit, r.remaining, r.reset), (None, Some(12), None));
    }

    #[test]
    fn the_provider_dialect_wins_over_the_common_one() {
        let h = parse(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit", "10"),
        ]);
        assert_eq!(h.get(Meter::Requests), reading(500, 499, 120));
    }
}
