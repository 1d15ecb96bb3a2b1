//! Stream lifetimes: a sliding idle window (`Stream-TTL`) or a fixed instant (`Stream-Expires-At`).

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::StreamError;
use crate::headers;

/// When a stream expires, if ever.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Seconds of inactivity (no GET or POST) after which the stream expires.
    pub ttl_secs: Option<u64>,
    /// A fixed expiry: the header as sent, and the instant in Unix milliseconds.
    pub expires_at: Option<(String, i64)>,
}

impl Lifetime {
    /// Parses the create headers; both at once, or either malformed, is a 400.
    pub fn from_headers(ttl: Option<&str>, expires_at: Option<&str>) -> Result<Lifetime, StreamError> {
        if ttl.is_some() && expires_at.is_some() {
            return Err(StreamError::bad_request(
                headers::STREAM_TTL,
                "send Stream-TTL or Stream-Expires-At, not both",
            ));
        }
        let ttl_secs = ttl.map(parse_ttl).transpose()?;
        let expires_at = expires_at
            .map(|text| parse_instant(text).map(|ms| (text.to_owned(), ms)))
            .transpose()?;
        Ok(Lifetime { ttl_secs, expires_at })
    }

    /// Whether a stream last read or written at `last_access_ms` has expired at `now_ms`.
    pub fn expired(&self, last_access_ms: u64, now_ms: u64) -> bool {
        let idle = self
            .ttl_secs
            .is_some_and(|ttl| now_ms >= last_access_ms.saturating_add(ttl.saturating_mul(1000)));
        let fixed = self
            .expires_at
            .as_ref()
            .is_some_and(|(_, at)| now_ms as i64 >= *at);
        idle || fixed
    }

    /// Whether two lifetimes are the same configuration (instants compared, not spellings).
    pub fn same_as(&self, other: &Lifetime) -> bool {
        self.ttl_secs == other.ttl_secs
            && self.expires_at.as_ref().map(|(_, at)| at) == other.expires_at.as_ref().map(|(_, at)| at)
    }
}

fn parse_ttl(text: &str) -> Result<u64, StreamError> {
    let canonical = text == "0"
        || (text.starts_with(|c: char| ('1'..='9').contains(&c)) && text.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| text.parse().ok()).flatten().ok_or_else(|| {
        StreamError::bad_request(
            headers::STREAM_TTL,
            "Stream-TTL must be a whole number of seconds (e.g. 3600)",
        )
    })
}

fn parse_instant(text: &str) -> Result<i64, StreamError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            StreamError::bad_request(
                headers::STREAM_EXPIRES_AT,
                "Stream-Expires-At must be an RFC 3339 time with Z or an offset (e.g. 2030-01-01T00:00:00Z)",
            )
        })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_must_be_canonical_digits() {
        assert_eq!(parse_ttl("0").ok(), Some(0));
        assert_eq!(parse_ttl("3600").ok(), Some(3600));
        for bad in ["", "01", "-1", "1.5", "1e3", " 1", "abc"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expires_at_is_rfc3339_and_exclusive_with_ttl() {
        // 2030-01-01T00:00:00Z is 1 893 456 000 s after the epoch.
        let instant = |text: &str| {
            let lifetime = Lifetime::from_headers(None, Some(text)).expect("valid");
            assert_eq!(lifetime.ttl_secs, None);
            let (kept, ms) = lifetime.expires_at.expect("an instant");
            assert_eq!(kept, text, "the header is kept as sent");
            ms
        };
        assert_eq!(instant("2030-01-01T00:00:00Z"), 1_893_456_000_000);
        assert_eq!(instant("2030-01-01T00:00:00.250Z"), 1_893_456_000_250);
        assert_eq!(instant("2030-01-01T02:00:00+02:00"), 1_893_456_000_000);
        assert_eq!(instant("2029-12-31T19:00:00-05:00"), 1_893_456_000_000);
        assert!(Lifetime::from_headers(None, Some("2030-01-01 00:00:00")).is_err());
        assert!(Lifetime::from_headers(Some("5"), Some("2030-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn the_idle_window_slides_from_the_last_access() {
        let lifetime = Lifetime {
            ttl_secs: Some(2),
            expires_at: None,
        };
        assert!(!lifetime.expired(10_000, 11_999));
        assert!(lifetime.expired(10_000, 12_000));
    }
}
