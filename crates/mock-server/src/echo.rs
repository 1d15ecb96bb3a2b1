//! `echo`: a service's 200 shows the request it received, so a client's templates (path, query,
//! headers, body) can be checked against what actually went over the wire.

use std::collections::BTreeMap;

use axum::http::request::Parts;
use serde_json::{Value, json};

/// The request as JSON: `method`, `path`, `query` (raw, `""` if none), `headers` (repeated ones
/// joined by `, `), `body` (the text, lossily UTF-8) and `json` (the body parsed, or null).
pub(crate) fn echo(parts: &Parts, body: &[u8]) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
        "json": serde_json::from_slice::<Value>(body).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_shown_whole() {
        let request = axum::http::Request::post("/v1/answer/7?x=1&y=2")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let shown = echo(&parts, br#"{"id": 7}"#);
        assert_eq!(shown["method"], "POST");
        assert_eq!(shown["path"], "/v1/answer/7");
        assert_eq!(shown["query"], "x=1&y=2");
        assert_eq!(shown["headers"]["x-a"], "1, 2");
        assert_eq!(shown["body"], r#"{"id": 7}"#);
        assert_eq!(shown["json"]["id"], 7);
        assert_eq!(echo(&parts, b"not json")["json"], Value::Null);
    }
}
