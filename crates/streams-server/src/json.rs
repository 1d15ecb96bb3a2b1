//! JSON mode: an append is a message or an array of messages; a read is one array.
//!
//! Each message is stored minified and followed by a comma, so the stored bytes of any run of
//! whole messages become a valid JSON array by dropping the last comma and adding brackets —
//! reads never parse what they return.

use serde_json::value::RawValue;

use crate::error::StreamError;

/// Splits an append's body into stored messages: a top-level array is flattened exactly one
/// level (`[[1],[2]]` is two messages); anything else is one message. `allow_empty` is true for
/// creates, where `[]` makes an empty stream; an append of `[]` is an error.
pub fn messages(body: &[u8], allow_empty: bool) -> Result<Vec<Vec<u8>>, StreamError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| StreamError::bad_request("body", "JSON body is not valid UTF-8"))?;
    let invalid =
        |error: serde_json::Error| StreamError::bad_request("body", format!("invalid JSON: {error}"));
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(invalid)?;
        if items.is_empty() && !allow_empty {
            return Err(StreamError::bad_request(
                "body",
                "an empty JSON array appends nothing",
            ));
        }
        Ok(items.into_iter().map(|item| stored(item.get())).collect())
    } else {
        let item: &RawValue = serde_json::from_str(text).map_err(invalid)?;
        Ok(vec![stored(item.get())])
    }
}

/// Wraps stored message bytes (each `…,`) as one JSON array.
pub fn array(stored_bytes: &[u8]) -> Vec<u8> {
    let inner = stored_bytes.strip_suffix(b",").unwrap_or(stored_bytes);
    let mut out = Vec::with_capacity(inner.len() + 2);
    out.push(b'[');
    out.extend_from_slice(inner);
    out.push(b']');
    out
}

/// A message as stored: minified, then a comma.
fn stored(raw: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 1);
    let mut in_string = false;
    let mut escaped = false;
    for &byte in raw.as_bytes() {
        if in_string {
            out.push(byte);
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    out.push(b',');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        messages(body.as_bytes(), false)
            .expect("valid")
            .into_iter()
            .map(|m| String::from_utf8(m).expect("utf-8"))
            .collect()
    }

    #[test]
    fn arrays_flatten_exactly_one_level() {
        assert_eq!(texts("[[1,2],[3]]"), ["[1,2],", "[3],"]);
        assert_eq!(texts("[[[1]]]"), ["[[1]],"]);
        assert_eq!(texts(r#" { "a" : "x y\"z" } "#), [r#"{"a":"x y\"z"},"#]);
        // An escaped backslash ends the escape: the quote after it closes the string.
        assert_eq!(texts(r#"["a\\" , " b "]"#), [r#""a\\","#, r#"" b ","#]);
    }

    #[test]
    fn empty_arrays_and_invalid_json() {
        assert!(messages(b"[]", false).is_err());
        assert_eq!(messages(b"[]", true).expect("valid").len(), 0);
        assert!(messages(b"{oops", false).is_err());
        assert!(messages(b"", false).is_err());
    }

    #[test]
    fn stored_messages_read_back_as_one_array() {
        let stored: Vec<u8> = messages(b"[1, {\"k\": [2]}]", false).expect("valid").concat();
        assert_eq!(array(&stored), b"[1,{\"k\":[2]}]");
        assert_eq!(array(b""), b"[]");
    }
}
