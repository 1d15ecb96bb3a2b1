//! Media types: how a stream's type is compared and which encoding its reads use.

/// Stored when a create names no usable type.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// How a stream's bytes are framed on reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `application/json`: appends are messages, reads are one JSON array.
    Json,
    /// `text/*`: bytes, sent as UTF-8 text in SSE.
    Text,
    /// Anything else: bytes, sent as base64 in SSE.
    Binary,
}

/// The media type before `;`, trimmed and lower-cased: the form two types are compared in.
pub fn normalize(content_type: &str) -> String {
    essence(content_type).to_ascii_lowercase()
}

/// Whether two types are the same once normalized (no allocation: appends compare on every
/// request).
pub fn same(a: &str, b: &str) -> bool {
    essence(a).eq_ignore_ascii_case(essence(b))
}

/// The media type before `;`, trimmed (case kept).
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// The type a create stores: the header verbatim when it names a type, else the default.
pub fn stored_type(header: Option<&str>) -> String {
    match header.map(str::trim) {
        Some(value) if is_valid(value) => value.to_owned(),
        _ => DEFAULT_CONTENT_TYPE.to_owned(),
    }
}

/// Whether `value` looks like `type/subtype[; params]`.
fn is_valid(value: &str) -> bool {
    let essence = normalize(value);
    let mut parts = essence.split('/');
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(t), Some(s), None) if token(t) && token(s))
}

/// The read framing of a stored type.
pub fn kind_of(content_type: &str) -> Kind {
    let essence = normalize(content_type);
    if essence == "application/json" {
        Kind::Json
    } else if essence.starts_with("text/") {
        Kind::Text
    } else {
        Kind::Binary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_compare_without_parameters_or_case() {
        assert_eq!(normalize(" APPLICATION/JSON ; charset=utf-8"), "application/json");
        assert_eq!(kind_of("Application/Json; charset=utf-8"), Kind::Json);
        assert_eq!(kind_of("text/plain"), Kind::Text);
        assert_eq!(kind_of("image/png"), Kind::Binary);
        assert!(same("Application/JSON; charset=utf-8", " application/json"));
        assert!(!same("text/plain", "text/html"));
    }

    #[test]
    fn a_missing_or_invalid_type_becomes_octet_stream_and_a_valid_one_is_kept_verbatim() {
        assert_eq!(stored_type(None), DEFAULT_CONTENT_TYPE);
        assert_eq!(stored_type(Some("not a type")), DEFAULT_CONTENT_TYPE);
        assert_eq!(stored_type(Some("")), DEFAULT_CONTENT_TYPE);
        assert_eq!(stored_type(Some("text/plain")), "text/plain");
        assert_eq!(
            stored_type(Some("Text/Plain; charset=utf-8")),
            "Text/Plain; charset=utf-8"
        );
    }
}
