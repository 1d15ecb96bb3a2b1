//! Anthropic's wire format: its routes, request validation, error JSON
//! (`{"type":"error","error":{"type","message"}}`), the message object and its stream events.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::answer;
use super::ask::{Answer, Ask, Endpoint};
use super::latency::Pace;
use super::problem::{Field, Invalid, Problem, read};
use super::quota::Counts;
use super::sse::{self, Event};
use super::tokens::PromptCount;

/// The route `method path` names, if any.
pub(crate) fn route(method: &str, path: &str) -> Option<Endpoint> {
    match (method, path) {
        ("POST", "/v1/messages") => Some(Endpoint::Messages),
        ("POST", "/v1/messages/count_tokens") => Some(Endpoint::CountTokens),
        ("GET", "/v1/models") => Some(Endpoint::Models),
        _ => None,
    }
}

/// The key of `x-api-key`, or of `Authorization: Bearer KEY` (which the API takes too, and
/// recent SDKs send).
pub(crate) fn key(headers: &HeaderMap) -> Option<&str> {
    match headers.get("x-api-key") {
        Some(key) => key.to_str().ok().map(str::trim),
        None => super::openai::key(headers),
    }
}

/// Whether `anthropic-version` is present.
pub(crate) fn has_version(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// The models listed when none are configured.
pub(crate) const DEFAULT_MODELS: &[&str] = &["claude-sonnet-4-5", "claude-haiku-4-5"];

const ROLES: &[&str] = &["user", "assistant"];

/// Reads and validates a request body.
pub(crate) fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Ask, Problem> {
    let object = read::object(body)?;
    let model = read::string(&object, "model", &Field::top("model"))?;
    let mut ask = Ask::new(endpoint, model);
    ask.fingerprint = answer::fingerprint(&object);
    let mut count = PromptCount::default();
    if let Some(system) = read::present(&object, "system") {
        text_of(system, &Field::top("system"), &mut count)?;
    }
    let at = Field::top("messages");
    for (i, message) in read::array(&object, "messages", &at)?.iter().enumerate() {
        let at = at.index(i);
        let message = read::item(message, &at)?;
        let role_at = at.key("role");
        let role = read::string(message, "role", &role_at)?;
        if !ROLES.contains(&role) {
            return Err(Problem::invalid(
                role_at,
                Invalid::Value {
                    got: role.to_owned(),
                    supported: ROLES,
                },
            ));
        }
        count.message(role);
        let content_at = at.key("content");
        match read::present(message, "content") {
            None => return Err(Problem::invalid(content_at, Invalid::Missing)),
            Some(content) => text_of(content, &content_at, &mut count)?,
        }
    }
    ask.prompt_tokens = count.total();
    if endpoint == Endpoint::Messages {
        let at = Field::top("max_tokens");
        ask.max_tokens = read::opt_integer(&object, "max_tokens", &at, 1)?
            .ok_or_else(|| Problem::invalid(at, Invalid::Missing))?;
        ask.stream = read::flag(&object, "stream", &Field::top("stream"))?;
    }
    Ok(ask)
}

/// Counts a string, or the `text` of an array of content blocks.
fn text_of(value: &Value, at: &Field, count: &mut PromptCount) -> Result<(), Problem> {
    match value {
        Value::String(s) => count.text(s),
        Value::Array(blocks) => {
            for (j, block) in blocks.iter().enumerate() {
                let at = at.index(j);
                let block: &Map<String, Value> = read::item(block, &at)?;
                read::string(block, "type", &at.key("type"))?;
                if let Some(text) = read::opt_string(block, "text", &at.key("text"))? {
                    count.text(text);
                }
            }
        }
        other => return Err(read::not(other, at, "a string or an array of content blocks")),
    }
    Ok(())
}

/// The status and JSON body for `problem`.
pub(crate) fn render(problem: &Problem) -> (StatusCode, String) {
    let (status, kind, message) = match problem {
        Problem::Json(e) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("Invalid JSON body: {e}"),
        ),
        Problem::Invalid(field, why) => {
            let name = field.dots();
            let message = match why {
                Invalid::Missing => format!("{name}: Field required"),
                Invalid::Type { expected, got } => format!("{name}: Input should be {expected}, not {got}"),
                Invalid::Value { got, supported } => format!(
                    "{name}: Input should be {}, not '{got}'",
                    supported
                        .iter()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                Invalid::Empty => format!("{name}: List should have at least 1 item after validation, not 0"),
                Invalid::Below { min } => format!("{name}: Input should be greater than or equal to {min}"),
            };
            (StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
        Problem::Unauthorized { .. } => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key".to_owned(),
        ),
        Problem::NoVersion => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required".to_owned(),
        ),
        Problem::NoRoute { method, path } => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("Not Found: {method} {path}"),
        ),
        Problem::NoModel(model) => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model: {model}"),
        ),
        Problem::Limited(refusal) => {
            let unit = match refusal.counts {
                Counts::Requests => "requests per minute",
                Counts::InputTokens => "input tokens per minute",
                Counts::OutputTokens | Counts::Tokens => "output tokens per minute",
            };
            let scope = match &refusal.model {
                Some(model) => format!("model {model}"),
                None => "this service".to_owned(),
            };
            let message = match refusal.retry_after {
                Some(_) => format!(
                    "This request would exceed the rate limit for {scope} of {} {unit} (used {}, requested {}). \
                     For details, refer to: https://docs.claude.com/en/api/rate-limits.",
                    refusal.limit, refusal.used, refusal.requested
                ),
                None => format!(
                    "This request needs {} {unit} but the rate limit for {scope} is {}: it can never be accepted; \
                     lower max_tokens or the prompt.",
                    refusal.requested, refusal.limit
                ),
            };
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
        Problem::Overloaded => (
            // 529: Anthropic's own status for an overloaded API.
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "Overloaded".to_owned(),
        ),
    };
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    (status, body.to_string())
}

/// `GET /v1/models`.
pub(crate) fn models<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let data: Vec<Value> = names
        .map(|id| json!({ "type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z" }))
        .collect();
    let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    json!({ "data": data, "has_more": false, "first_id": first, "last_id": last }).to_string()
}

/// `POST /v1/messages/count_tokens`.
pub(crate) fn count_tokens(ask: &Ask) -> String {
    json!({ "input_tokens": ask.prompt_tokens }).to_string()
}

fn stop_reason(answer: &Answer) -> &'static str {
    if answer.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// A whole (non-streamed) message.
pub(crate) fn answer(ask: &Ask, answer: &Answer, id: &str) -> String {
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": ask.model,
        "content": [{ "type": "text", "text": answer.text() }],
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": { "input_tokens": ask.prompt_tokens, "output_tokens": answer.tokens() },
    })
    .to_string()
}

/// A streamed message: `message_start`, `content_block_start`, `ping`, one `content_block_delta`
/// per token, `content_block_stop`, `message_delta` (stop reason and output tokens),
/// `message_stop`.
pub(crate) fn stream(ask: &Ask, answer: &Answer, id: &str, pace: &Pace) -> Vec<Event> {
    let now = Duration::ZERO;
    let event = |wait, name: &str, data: Value| Event {
        wait,
        frame: sse::named(name, &data.to_string()),
    };
    let mut events = Vec::with_capacity(answer.pieces.len() + 6);
    events.push(event(
        now,
        "message_start",
        json!({ "type": "message_start", "message": {
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": ask.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": ask.prompt_tokens, "output_tokens": 1 },
        }}),
    ));
    events.push(event(
        now,
        "content_block_start",
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
    ));
    events.push(event(now, "ping", json!({ "type": "ping" })));
    for (i, text) in answer.pieces.iter().enumerate() {
        let wait = if i == 0 { pace.first_token } else { pace.per_token };
        events.push(event(
            wait,
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": text } }),
        ));
    }
    events.push(event(
        now,
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": 0 }),
    ));
    events.push(event(
        now,
        "message_delta",
        json!({ "type": "message_delta",
                "delta": { "stop_reason": stop_reason(answer), "stop_sequence": null },
                "usage": { "output_tokens": answer.tokens() } }),
    ));
    events.push(event(now, "message_stop", json!({ "type": "message_stop" })));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(body: Value) -> String {
        let problem = parse(Endpoint::Messages, body.to_string().as_bytes()).unwrap_err();
        let (status, body) = render(&problem);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        body["error"]["message"].as_str().unwrap().to_owned()
    }

    #[test]
    fn bad_requests_name_the_field() {
        let ok = |extra: Value| {
            let mut b =
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    b.as_object_mut().unwrap().remove(k);
                } else {
                    b[k] = v.clone();
                }
            }
            b
        };
        assert_eq!(
            message_of(ok(json!({"max_tokens": null}))),
            "max_tokens: Field required"
        );
        assert_eq!(message_of(ok(json!({"model": null}))), "model: Field required");
        assert!(
            message_of(ok(json!({"max_tokens": "5"}))).starts_with("max_tokens: Input should be an integer")
        );
        assert!(
            message_of(ok(json!({"messages": [{"role": "bot", "content": "x"}]})))
                .starts_with("messages.0.role:")
        );
        assert!(
            message_of(ok(json!({"messages": [{"role": "user", "content": 5}]})))
                .starts_with("messages.0.content:")
        );
        assert!(
            message_of(ok(json!({"messages": []}))).starts_with("messages: List should have at least 1 item")
        );
        assert!(message_of(ok(json!({"system": 5}))).starts_with("system:"));
    }
}
