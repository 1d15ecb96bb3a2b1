//! OpenAI's wire format: its routes, request validation, error JSON
//! (`{"error":{"message","type","param","code"}}`), response objects and stream chunks.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::answer;
use super::ask::{Answer, Ask, Endpoint};
use super::headers::go_duration;
use super::latency::Pace;
use super::problem::{Field, Invalid, Problem, read};
use super::quota::Counts;
use super::sse::{self, Event};
use super::tokens::{self, PromptCount};

/// The route `method path` names, if any.
pub(crate) fn route(method: &str, path: &str) -> Option<Endpoint> {
    match (method, path) {
        ("POST", "/v1/chat/completions") => Some(Endpoint::Chat),
        ("POST", "/v1/completions") => Some(Endpoint::Completions),
        ("POST", "/v1/embeddings") => Some(Endpoint::Embeddings),
        ("GET", "/v1/models") => Some(Endpoint::Models),
        _ => None,
    }
}

/// The key of `Authorization: Bearer KEY`.
pub(crate) fn key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The models listed when none are configured.
pub(crate) const DEFAULT_MODELS: &[&str] = &["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"];

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];
const ENCODINGS: &[&str] = &["float", "base64"];

/// Reads and validates a request body.
pub(crate) fn parse(endpoint: Endpoint, body: &[u8], default_max_tokens: u64) -> Result<Ask, Problem> {
    let object = read::object(body)?;
    let model = read::string(&object, "model", &Field::top("model"))?;
    let mut ask = Ask::new(endpoint, model);
    ask.fingerprint = answer::fingerprint(&object);
    match endpoint {
        Endpoint::Chat => {
            ask.prompt_tokens = chat_prompt(&object)?;
            let max = read::opt_integer(
                &object,
                "max_completion_tokens",
                &Field::top("max_completion_tokens"),
                1,
            )?;
            let legacy = read::opt_integer(&object, "max_tokens", &Field::top("max_tokens"), 1)?;
            ask.max_tokens = max.or(legacy).unwrap_or(default_max_tokens);
            stream_fields(&object, &mut ask)?;
        }
        Endpoint::Completions => {
            let at = Field::top("prompt");
            ask.prompt_tokens = match read::present(&object, "prompt") {
                None => return Err(Problem::invalid(at, Invalid::Missing)),
                Some(Value::String(s)) => tokens::count(s),
                Some(Value::Array(items)) if !items.is_empty() => {
                    let mut sum = 0;
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::String(s) => sum += tokens::count(s),
                            other => return Err(read::not(other, &at.index(i), "a string")),
                        }
                    }
                    sum
                }
                Some(Value::Array(_)) => return Err(Problem::invalid(at, Invalid::Empty)),
                Some(other) => return Err(read::not(other, &at, "a string or an array of strings")),
            };
            // The legacy endpoint's own default.
            ask.max_tokens =
                read::opt_integer(&object, "max_tokens", &Field::top("max_tokens"), 1)?.unwrap_or(16);
            stream_fields(&object, &mut ask)?;
        }
        Endpoint::Embeddings => {
            let at = Field::top("input");
            let (tokens, inputs) = match read::present(&object, "input") {
                None => return Err(Problem::invalid(at, Invalid::Missing)),
                Some(Value::String(s)) => (tokens::count(s), 1),
                Some(Value::Array(items)) if !items.is_empty() => {
                    let mut sum = 0;
                    for (i, item) in items.iter().enumerate() {
                        sum += match item {
                            Value::String(s) => tokens::count(s),
                            // Token ids: one each (an array of them is one input, or many).
                            Value::Number(_) if items.iter().all(Value::is_u64) => 1,
                            Value::Array(ids) if ids.iter().all(Value::is_u64) => ids.len() as u64,
                            other => {
                                return Err(read::not(
                                    other,
                                    &at.index(i),
                                    "a string or an array of token ids",
                                ));
                            }
                        };
                    }
                    let inputs = if items.iter().all(Value::is_u64) {
                        1
                    } else {
                        items.len()
                    };
                    (sum, inputs)
                }
                Some(Value::Array(_)) => return Err(Problem::invalid(at, Invalid::Empty)),
                Some(other) => return Err(read::not(other, &at, "a string or an array")),
            };
            ask.prompt_tokens = tokens;
            ask.inputs = inputs;
            ask.dimensions = usize::try_from(
                read::opt_integer(&object, "dimensions", &Field::top("dimensions"), 1)?.unwrap_or(1536),
            )
            .unwrap_or(1536);
            let format_at = Field::top("encoding_format");
            ask.base64 = match read::opt_string(&object, "encoding_format", &format_at)? {
                None | Some("float") => false,
                Some("base64") => true,
                Some(other) => {
                    return Err(Problem::invalid(
                        format_at,
                        Invalid::Value {
                            got: other.to_owned(),
                            supported: ENCODINGS,
                        },
                    ));
                }
            };
        }
        Endpoint::Messages | Endpoint::CountTokens | Endpoint::Models => {}
    }
    Ok(ask)
}

fn stream_fields(object: &Map<String, Value>, ask: &mut Ask) -> Result<(), Problem> {
    ask.stream = read::flag(object, "stream", &Field::top("stream"))?;
    if let Some(options) = read::present(object, "stream_options") {
        let at = Field::top("stream_options");
        let options = read::item(options, &at)?;
        ask.include_usage = read::flag(options, "include_usage", &at.key("include_usage"))?;
    }
    if let Some(n) = read::opt_integer(object, "n", &Field::top("n"), 1)?
        && n != 1
    {
        return Err(Problem::invalid(
            Field::top("n"),
            Invalid::Value {
                got: n.to_string(),
                supported: &["1"],
            },
        ));
    }
    Ok(())
}

fn chat_prompt(object: &Map<String, Value>) -> Result<u64, Problem> {
    let at = Field::top("messages");
    let messages = read::array(object, "messages", &at)?;
    let mut count = PromptCount::default();
    for (i, message) in messages.iter().enumerate() {
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
            None if role == "assistant" => {}
            None => return Err(Problem::invalid(content_at, Invalid::Missing)),
            Some(Value::String(s)) => count.text(s),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let part = read::item(part, &content_at.index(j))?;
                    if let Some(text) = read::opt_string(part, "text", &content_at.index(j).key("text"))? {
                        count.text(text);
                    }
                }
            }
            Some(other) => return Err(read::not(other, &content_at, "a string or an array of parts")),
        }
        if let Some(name) = read::opt_string(message, "name", &at.key("name"))? {
            count.name(name);
        }
    }
    Ok(count.total())
}

/// The status and JSON body for `problem`.
pub(crate) fn render(problem: &Problem) -> (StatusCode, String) {
    let (status, message, kind, param, code): (StatusCode, String, &str, Option<String>, Option<&str>) = match problem {
        Problem::Json(e) => (
            StatusCode::BAD_REQUEST,
            format!(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your \
                 HTTP library correctly. The OpenAI API expects a JSON payload.) {e}"
            ),
            "invalid_request_error",
            None,
            None,
        ),
        Problem::Invalid(field, why) => {
            let name = field.brackets();
            let (message, code) = match why {
                Invalid::Missing => (format!("Missing required parameter: '{name}'."), "missing_required_parameter"),
                Invalid::Type { expected, got } => (
                    format!("Invalid type for '{name}': expected {expected}, but got {got} instead."),
                    "invalid_type",
                ),
                Invalid::Value { got, supported } => (
                    format!(
                        "Invalid value for '{name}': '{got}'. Supported values are: {}.",
                        supported.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
                    ),
                    "invalid_value",
                ),
                Invalid::Empty => (
                    format!(
                        "Invalid '{name}': empty array. Expected an array with minimum length 1, but got an empty \
                         array instead."
                    ),
                    "empty_array",
                ),
                Invalid::Below { min } => (
                    format!("Invalid '{name}': integer below minimum value. Expected a value >= {min}."),
                    "integer_below_min_value",
                ),
            };
            (StatusCode::BAD_REQUEST, message, "invalid_request_error", Some(name), Some(code))
        }
        Problem::Unauthorized { given: None } => (
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using \
             Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .to_owned(),
            "invalid_request_error",
            None,
            None,
        ),
        Problem::Unauthorized { given: Some(key) } => (
            StatusCode::UNAUTHORIZED,
            format!("Incorrect API key provided: {}.", redact(key)),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        Problem::NoVersion => (StatusCode::BAD_REQUEST, String::new(), "invalid_request_error", None, None),
        Problem::NoRoute { method, path } => (
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
        Problem::NoModel(model) => (
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model".to_owned()),
            Some("model_not_found"),
        ),
        Problem::Limited(refusal) => {
            let unit = match refusal.counts {
                Counts::Requests => "requests per min (RPM)",
                _ => "tokens per min (TPM)",
            };
            let kind = match refusal.counts {
                Counts::Requests => "requests",
                _ => "tokens",
            };
            let scope = refusal.model.as_deref().unwrap_or("this service");
            let message = match refusal.retry_after {
                Some(wait) => format!(
                    "Rate limit reached for {scope} in organization org-mock on {unit}: Limit {}, Used {}, Requested \
                     {}. Please try again in {}.",
                    refusal.limit,
                    refusal.used,
                    refusal.requested,
                    go_duration(wait)
                ),
                None => format!(
                    "Request too large for {scope} in organization org-mock on {unit}: Limit {}, Requested {}. The \
                     input or output tokens must be reduced in order to run successfully.",
                    refusal.limit, refusal.requested
                ),
            };
            (StatusCode::TOO_MANY_REQUESTS, message, kind, None, Some("rate_limit_exceeded"))
        }
        Problem::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is overloaded or not ready yet.".to_owned(),
            "server_error",
            None,
            None,
        ),
    };
    let body = json!({ "error": { "message": message, "type": kind, "param": param, "code": code } });
    (status, body.to_string())
}

fn redact(key: &str) -> String {
    let head: String = key.chars().take(3).collect();
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}***{tail}")
}

/// `GET /v1/models`.
pub(crate) fn models<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let data: Vec<Value> = names
        .map(|id| json!({ "id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system" }))
        .collect();
    json!({ "object": "list", "data": data }).to_string()
}

fn usage(ask: &Ask, answer: &Answer) -> Value {
    json!({
        "prompt_tokens": ask.prompt_tokens,
        "completion_tokens": answer.tokens(),
        "total_tokens": ask.prompt_tokens + answer.tokens(),
    })
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.truncated { "length" } else { "stop" }
}

/// A whole (non-streamed) answer.
pub(crate) fn answer(ask: &Ask, answer: &Answer, id: &str, created: u64, seed: u64) -> String {
    match ask.endpoint {
        Endpoint::Chat => json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": created,
            "model": ask.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": answer.text(), "refusal": null },
                "logprobs": null,
                "finish_reason": finish_reason(answer),
            }],
            "usage": usage(ask, answer),
            "system_fingerprint": "fp_tem_mock",
        }),
        Endpoint::Completions => json!({
            "id": format!("cmpl-{id}"),
            "object": "text_completion",
            "created": created,
            "model": ask.model,
            "choices": [{
                "text": answer.text(), "index": 0, "logprobs": null, "finish_reason": finish_reason(answer),
            }],
            "usage": usage(ask, answer),
        }),
        Endpoint::Embeddings => {
            let mut rng = answer::rng(seed, ask.fingerprint);
            let data: Vec<Value> = (0..ask.inputs)
                .map(|index| {
                    let vector = answer::embedding(&mut rng, ask.dimensions);
                    let embedding = if ask.base64 {
                        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                    } else {
                        json!(vector)
                    };
                    json!({ "object": "embedding", "index": index, "embedding": embedding })
                })
                .collect();
            json!({
                "object": "list",
                "data": data,
                "model": ask.model,
                "usage": { "prompt_tokens": ask.prompt_tokens, "total_tokens": ask.prompt_tokens },
            })
        }
        Endpoint::Messages | Endpoint::CountTokens | Endpoint::Models => Value::Null,
    }
    .to_string()
}

/// A streamed answer: a role chunk, one chunk per token, a chunk with `finish_reason`, a usage
/// chunk when asked (`stream_options.include_usage`), then `data: [DONE]`.
pub(crate) fn stream(ask: &Ask, answer: &Answer, id: &str, created: u64, pace: &Pace) -> Vec<Event> {
    let chat = ask.endpoint == Endpoint::Chat;
    let (id, object) = if chat {
        (format!("chatcmpl-{id}"), "chat.completion.chunk")
    } else {
        (format!("cmpl-{id}"), "text_completion")
    };
    let with_usage = ask.include_usage;
    let chunk = |choice: Value| {
        let mut chunk = json!({
            "id": id, "object": object, "created": created, "model": ask.model, "choices": [choice],
        });
        if chat {
            chunk["system_fingerprint"] = json!("fp_tem_mock");
        }
        if with_usage {
            chunk["usage"] = Value::Null;
        }
        sse::data(&chunk.to_string())
    };
    let piece = |text: &str, finish: Option<&str>| {
        if chat {
            let delta = if finish.is_some() {
                json!({})
            } else {
                json!({ "content": text })
            };
            json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
        } else {
            json!({ "text": text, "index": 0, "logprobs": null, "finish_reason": finish })
        }
    };
    let mut events = Vec::with_capacity(answer.pieces.len() + 4);
    if chat {
        events.push(Event {
            wait: pace.first_token,
            frame: chunk(json!({
                "index": 0, "delta": { "role": "assistant", "content": "", "refusal": null },
                "logprobs": null, "finish_reason": null,
            })),
        });
    }
    for (i, text) in answer.pieces.iter().enumerate() {
        let wait = match (i, chat) {
            (0, false) => pace.first_token,
            (0, true) => std::time::Duration::ZERO,
            _ => pace.per_token,
        };
        events.push(Event {
            wait,
            frame: chunk(piece(text, None)),
        });
    }
    events.push(Event {
        wait: std::time::Duration::ZERO,
        frame: chunk(piece("", Some(finish_reason(answer)))),
    });
    if with_usage {
        let mut last = json!({
            "id": id, "object": object, "created": created, "model": ask.model, "choices": [],
            "usage": usage(ask, answer),
        });
        if chat {
            last["system_fingerprint"] = json!("fp_tem_mock");
        }
        events.push(Event {
            wait: std::time::Duration::ZERO,
            frame: sse::data(&last.to_string()),
        });
    }
    events.push(Event {
        wait: std::time::Duration::ZERO,
        frame: "data: [DONE]\n\n".to_owned(),
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(endpoint: Endpoint, body: Value) -> (String, String) {
        let problem = parse(endpoint, body.to_string().as_bytes(), 16).unwrap_err();
        let (status, body) = render(&problem);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_str(&body).unwrap();
        (
            body["error"]["param"].as_str().unwrap_or("").to_owned(),
            body["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn bad_requests_name_the_field() {
        let chat = Endpoint::Chat;
        assert_eq!(field_of(chat, json!({"messages": []})).0, "model");
        assert_eq!(field_of(chat, json!({"model": "m"})).0, "messages");
        let (param, message) = field_of(chat, json!({"model": "m", "messages": "hi"}));
        assert_eq!(param, "messages");
        assert!(
            message.contains("expected an array, but got a string"),
            "{message}"
        );
        assert_eq!(
            field_of(chat, json!({"model": "m", "messages": []})).0,
            "messages"
        );
        let (param, message) = field_of(
            chat,
            json!({"model": "m", "messages": [{"role": "bot", "content": "x"}]}),
        );
        assert_eq!(param, "messages[0].role");
        assert!(message.contains("'bot'"), "{message}");
        assert_eq!(
            field_of(chat, json!({"model": "m", "messages": [{"role": "user"}]})).0,
            "messages[0].content"
        );
        assert_eq!(
            field_of(
                chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})
            )
            .0,
            "max_tokens"
        );
        assert_eq!(
            field_of(
                chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"})
            )
            .0,
            "stream"
        );
        assert_eq!(
            field_of(Endpoint::Embeddings, json!({"model": "m", "input": 5})).0,
            "input"
        );
        assert_eq!(
            field_of(Endpoint::Completions, json!({"model": "m", "prompt": [1]})).0,
            "prompt[0]"
        );
    }

    #[test]
    fn a_chat_prompt_counts_every_message() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "hello world"},
            {"role": "user", "content": [{"type": "text", "text": "hello world"}], "name": "bob"},
        ]});
        let ask = parse(Endpoint::Chat, body.to_string().as_bytes(), 16).unwrap();
        let expected = 2 * tokens::PER_MESSAGE
            + tokens::count("system")
            + tokens::count("user")
            + 2 * tokens::count("hello world")
            + tokens::PER_NAME
            + tokens::count("bob")
            + tokens::REPLY_PRIMING;
        assert_eq!(ask.prompt_tokens, expected);
        assert_eq!(ask.max_tokens, 16, "the default");
    }
}
