//! Limits an API states in its headers: the IETF draft's `RateLimit-Policy` / `RateLimit-*`,
//! and the common `X-RateLimit-*`. When a response says how many requests a window allows,
//! detection reads it instead of measuring it.

use http::HeaderMap;

/// A rate limit an API stated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatedRate {
    pub requests: u64,
    pub window_ms: u64,
    /// The headers it came from, for the evidence.
    pub source: String,
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

/// Reads a stated rate limit. The window must be stated too (`RateLimit-Policy: 100;w=60`, or a
/// `…-Window` header): a reset time alone does not say how long a window is (a token bucket's
/// reset is its refill time), and guessing it wrong would be a confident error.
pub fn stated_rate(headers: &HeaderMap) -> Option<StatedRate> {
    if let Some(policy) = text(headers, "ratelimit-policy") {
        // `limit;w=window[;…]`, possibly several policies separated by commas: take the
        // strictest per second.
        let best = policy
            .split(',')
            .filter_map(parse_policy)
            .min_by(|a, b| (a.0 as f64 / a.1 as f64).total_cmp(&(b.0 as f64 / b.1 as f64)))?;
        return Some(StatedRate {
            requests: best.0,
            window_ms: best.1 * 1000,
            source: format!("RateLimit-Policy: {policy}"),
        });
    }
    for prefix in ["ratelimit", "x-ratelimit"] {
        let limit = text(headers, &format!("{prefix}-limit")).and_then(|v| v.parse::<u64>().ok());
        let window = text(headers, &format!("{prefix}-window")).and_then(|v| v.parse::<u64>().ok());
        if let (Some(requests), Some(window_secs)) = (limit, window)
            && requests > 0
            && window_secs > 0
        {
            return Some(StatedRate {
                requests,
                window_ms: window_secs * 1000,
                source: format!("{prefix}-limit: {requests}, {prefix}-window: {window_secs}"),
            });
        }
    }
    None
}

/// A request quota a response mentions without stating its window (`X-RateLimit-Limit: 100`).
pub fn stated_quota(headers: &HeaderMap) -> Option<u64> {
    ["ratelimit-limit", "x-ratelimit-limit"]
        .iter()
        .find_map(|name| text(headers, name)?.parse().ok())
}

fn parse_policy(policy: &str) -> Option<(u64, u64)> {
    let mut parts = policy.split(';').map(str::trim);
    let limit: u64 = parts.next()?.parse().ok()?;
    let window: u64 = parts.find_map(|p| p.strip_prefix("w=")?.parse().ok())?;
    (limit > 0 && window > 0).then_some((limit, window))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn the_ietf_policy_header_states_limit_and_window() {
        let stated = stated_rate(&headers(&[("ratelimit-policy", "600;w=60")])).expect("stated");
        assert_eq!((stated.requests, stated.window_ms), (600, 60_000));
        let strictest = stated_rate(&headers(&[("ratelimit-policy", "100;w=1, 1000;w=60")])).expect("stated");
        assert_eq!((strictest.requests, strictest.window_ms), (1000, 60_000));
    }

    #[test]
    fn a_limit_without_a_window_is_only_a_quota() {
        let h = headers(&[("x-ratelimit-limit", "100"), ("x-ratelimit-reset", "1")]);
        assert_eq!(stated_rate(&h), None);
        assert_eq!(stated_quota(&h), Some(100));
        let h = headers(&[("x-ratelimit-limit", "100"), ("x-ratelimit-window", "10")]);
        assert_eq!(
            stated_rate(&h).map(|s| (s.requests, s.window_ms)),
            Some((100, 10_000))
        );
    }
}
