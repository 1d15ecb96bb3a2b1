//! The protocol's header names, and the headers every response carries (security and CORS).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::offset::Offset;

pub const STREAM_NEXT_OFFSET: &str = "stream-next-offset";
pub const STREAM_UP_TO_DATE: &str = "stream-up-to-date";
pub const STREAM_CLOSED: &str = "stream-closed";
pub const STREAM_CURSOR: &str = "stream-cursor";
pub const STREAM_SEQ: &str = "stream-seq";
pub const STREAM_TTL: &str = "stream-ttl";
pub const STREAM_EXPIRES_AT: &str = "stream-expires-at";
pub const STREAM_FORKED_FROM: &str = "stream-forked-from";
pub const STREAM_FORK_OFFSET: &str = "stream-fork-offset";
pub const STREAM_FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
pub const STREAM_SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, HEAD, OPTIONS";
const ALLOW_HEADERS: &str = "content-type, authorization, if-none-match, stream-seq, stream-ttl, \
    stream-expires-at, stream-closed, stream-forked-from, stream-fork-offset, \
    stream-fork-sub-offset, producer-id, producer-epoch, producer-seq";
const EXPOSE_HEADERS: &str = "stream-next-offset, stream-up-to-date, stream-closed, stream-cursor, \
    stream-ttl, stream-expires-at, stream-sse-data-encoding, producer-epoch, producer-seq, \
    producer-expected-seq, producer-received-seq, etag, content-type, content-encoding, vary, location";

/// A header value holding an offset (always visible ASCII).
pub fn offset_value(offset: Offset) -> HeaderValue {
    // Every append and read answers with one, so the common form (below 10^16 bytes) is
    // written digit by digit rather than through the formatter.
    const PREFIX: &[u8] = b"0000000000000000_";
    let mut rest = offset.0;
    if rest >= 10_u64.pow(16) {
        return HeaderValue::from_str(&offset.to_string()).unwrap_or_else(|_| HeaderValue::from_static("0"));
    }
    let mut bytes = [b'0'; 33];
    bytes[..PREFIX.len()].copy_from_slice(PREFIX);
    for digit in bytes[PREFIX.len()..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A request header as text, if present and visible ASCII.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Whether a flag header says `true` (case-insensitive); any other value counts as absent.
pub fn is_true(headers: &HeaderMap, name: &str) -> bool {
    text(headers, name).is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// Stamps the security and CORS headers every response carries — errors, live reads and
/// preflights included — so browsers can use the server directly.
pub fn stamp(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_values_match_the_wire_form() {
        for bytes in [0, 7, 1_234_567, 9_999_999_999_999_999, 10_u64.pow(16), u64::MAX] {
            let offset = Offset(bytes);
            assert_eq!(offset_value(offset).to_str().expect("ascii"), offset.to_string());
        }
    }
}
