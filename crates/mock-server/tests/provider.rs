//! The OpenAI- and Anthropic-shaped services on a real socket: routes under a prefix and at the
//! root, headers that track the quota across a window, token reservations refused whole,
//! 64 concurrent clients never getting more than the limits (checked from the clients' side),
//! stream framing byte for byte, seeded answers, and errors that name the field.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mock_server::{Definition, Limits, MockServer, Provider, ProviderConfig};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

fn openai(rpm: u64, tpm: u64, window_ms: u64) -> ProviderConfig {
    let mut config = ProviderConfig::new(Provider::Openai);
    config.limits = Limits {
        rpm: Some(rpm),
        tpm: Some(tpm),
        ..Default::default()
    };
    config.window_ms = window_ms;
    config
}

async fn single(config: ProviderConfig) -> MockServer {
    MockServer::builder()
        .single(config)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

fn chat(max_tokens: u64) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "Say something about rate limits."}]})
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn number(headers: &HeaderMap, name: &str) -> u64 {
    header(headers, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {headers:?}"))
}

/// Parses a Go duration as the OpenAI headers write it (`1.5s`, `17ms`, `1m0s`) into ms.
fn go_ms(text: &str) -> u64 {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().unwrap();
    }
    let (minutes, rest) = match text.split_once('m') {
        Some((m, rest)) => (m.parse::<u64>().unwrap(), rest),
        None => (0, text),
    };
    let seconds: f64 = rest.strip_suffix('s').unwrap().parse().unwrap();
    minutes * 60_000 + (seconds * 1000.0).round() as u64
}

async fn post(url: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
    let response = reqwest::Client::new().post(url).json(body).send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn openai_headers_track_the_quota_across_a_window() {
    let window = 1_500;
    let server = single(openai(3, 10_000, window)).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let mut tokens_left = 10_000;
    let first_sent = Instant::now();
    for left in [2, 1, 0] {
        let (status, headers, body) = post(&url, &chat(10)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens_left -= body["usage"]["prompt_tokens"].as_u64().unwrap() + 10;
        assert_eq!(number(&headers, "x-ratelimit-limit-requests"), 3);
        assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), left);
        assert_eq!(number(&headers, "x-ratelimit-limit-tokens"), 10_000);
        assert_eq!(
            number(&headers, "x-ratelimit-remaining-tokens"),
            tokens_left,
            "the reservation"
        );
        // Just accepted: the window holds it for a whole window more.
        assert_eq!(header(&headers, "x-ratelimit-reset-requests"), "1.5s");
        assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), "1.5s");
    }
    let (status, headers, body) = post(&url, &chat(10)).await;
    let elapsed = first_sent.elapsed().as_millis() as u64;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on requests per min (RPM): Limit 3, Used 3, Requested 1"),
        "{body}"
    );
    assert_eq!(number(&headers, "x-ratelimit-remaining-requests"), 0);
    assert_eq!(
        number(&headers, "x-ratelimit-remaining-tokens"),
        tokens_left,
        "nothing taken"
    );
    // Until the first leaves the window, and until the last does: both counted down by the
    // time since they were accepted.
    let retry_ms = number(&headers, "retry-after-ms");
    assert!(
        retry_ms <= window && retry_ms + elapsed + 1 >= window,
        "{retry_ms} after {elapsed}"
    );
    assert_eq!(number(&headers, "retry-after"), retry_ms.div_ceil(1000));
    let reset = go_ms(header(&headers, "x-ratelimit-reset-requests"));
    assert!(reset >= retry_ms && reset <= window, "{reset}");

    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    let (status, headers, _) = post(&url, &chat(10)).await;
    assert_eq!(status, StatusCode::OK, "the first left the window");
    // The new request takes one place; how many of the other two have left by now depends on
    // how long this machine took since they were sent, so only that bound is certain.
    assert!(number(&headers, "x-ratelimit-remaining-requests") <= 2);
    let stats = server.stats("default").unwrap();
    assert_eq!(stats.by_status.get("200"), Some(&4));
    assert_eq!(stats.by_status.get("429"), Some(&1));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_reservation_that_does_not_fit_is_refused_whole() {
    let server = single(openai(1_000, 200, 60_000)).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, headers, body) = post(&url, &chat(50)).await;
    assert_eq!(status, StatusCode::OK);
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let used = prompt + 50;
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 200 - used);
    // One token more than is left: refused, naming the limit and the figures.
    let too_many = 200 - used - prompt + 1;
    let (status, headers, body) = post(&url, &chat(too_many)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["type"], "tokens");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "tokens per min (TPM): Limit 200, Used {used}, Requested {}",
            prompt + too_many
        )),
        "{message}"
    );
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 200 - used);
    assert_eq!(
        number(&headers, "x-ratelimit-remaining-requests"),
        999,
        "the request was not counted"
    );
    // Exactly what is left fits.
    let (status, headers, _) = post(&url, &chat(too_many - 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(number(&headers, "x-ratelimit-remaining-tokens"), 0);
    // More than the whole limit can never fit: no retry-after, and the SDKs are told not to retry.
    let (status, headers, body) = post(&url, &chat(500)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large"),
        "{body}"
    );
    assert_eq!(header(&headers, "x-should-retry"), "false");
    assert!(headers.get("retry-after").is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn anthropic_counts_input_and_output_apart_with_absolute_resets() {
    let mut config = ProviderConfig::new(Provider::Anthropic);
    config.limits = Limits {
        rpm: Some(100),
        itpm: Some(10_000),
        otpm: Some(1_000),
        ..Default::default()
    };
    let server = single(config).await;
    let url = format!("{}/v1/messages", server.url());
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 600,
                      "messages": [{"role": "user", "content": "hello"}]});
    let before = std::time::SystemTime::now();
    let (status, headers, answer) = post(&url, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["type"], "text");
    let input = answer["usage"]["input_tokens"].as_u64().unwrap();
    let output = answer["usage"]["output_tokens"].as_u64().unwrap();
    assert!((1..=600).contains(&output));
    assert_eq!(
        answer["stop_reason"],
        if output == 600 { "max_tokens" } else { "end_turn" }
    );
    assert_eq!(number(&headers, "anthropic-ratelimit-requests-remaining"), 99);
    assert_eq!(
        number(&headers, "anthropic-ratelimit-input-tokens-remaining"),
        10_000 - input
    );
    assert_eq!(
        number(&headers, "anthropic-ratelimit-output-tokens-remaining"),
        1_000 - output
    );
    // The tightest of the two.
    assert_eq!(number(&headers, "anthropic-ratelimit-tokens-limit"), 1_000);
    let reset = header(&headers, "anthropic-ratelimit-output-tokens-reset");
    let reset = time::OffsetDateTime::parse(reset, &time::format_description::well_known::Rfc3339).unwrap();
    let expected = time::OffsetDateTime::from(before) + Duration::from_secs(60);
    assert!(
        (reset - expected).whole_seconds().abs() <= 2,
        "{reset} vs {expected}"
    );
    // 600 more output tokens do not fit unless the first answer was short.
    if output > 400 {
        let (status, headers, refused) = post(&url, &body).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["error"]["type"], "rate_limit_error");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("output tokens per minute")
        );
        assert!(number(&headers, "retry-after") <= 60);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn over_the_concurrency_cap_is_503_for_openai_and_529_for_anthropic() {
    for (provider, path, body, status) in [
        (Provider::Openai, "/v1/chat/completions", chat(1), 503),
        (
            Provider::Anthropic,
            "/v1/messages",
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
            529,
        ),
    ] {
        let mut config = ProviderConfig::new(provider);
        config.max_concurrency = Some(1);
        config.latency.first_token_ms = [400, 400];
        let server = single(config).await;
        let url = format!("{}{path}", server.url());
        let slow = tokio::spawn({
            let (url, body) = (url.clone(), body.clone());
            async move { post(&url, &body).await.0 }
        });
        // Wait until the first is in flight (the stats say so), then knock.
        while server.stats("default").unwrap().peak_concurrency == 0 {
            tokio::task::yield_now().await;
        }
        let (got, _, error) = post(&url, &body).await;
        assert_eq!(got.as_u16(), status, "{error}");
        if provider == Provider::Anthropic {
            assert_eq!(error["error"]["type"], "overloaded_error");
        }
        assert_eq!(slow.await.unwrap(), StatusCode::OK);
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn sixty_four_clients_never_get_more_than_the_limits() {
    const WINDOW: u64 = 1_000;
    const RPM: u64 = 25;
    const TPM: u64 = 1_500;
    let server = single(openai(RPM, TPM, WINDOW)).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let run = Duration::from_millis(3_200);
    let clients: Vec<_> = (0..64u64)
        .map(|client| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                // (sent, received, tokens counted) of every 200, and the remaining headers seen.
                let mut accepted = Vec::new();
                let mut usage = (0, 0);
                let mut i = 0;
                while started.elapsed() < run {
                    i += 1;
                    let max_tokens = 5 + (client * 7 + i) % 40;
                    let sent = started.elapsed();
                    let response = http.post(&url).json(&chat(max_tokens)).send().await.unwrap();
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body: Value = response.json().await.unwrap();
                    let received = started.elapsed();
                    match status.as_u16() {
                        200 => {
                            let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
                            usage.0 += prompt;
                            usage.1 += body["usage"]["completion_tokens"].as_u64().unwrap();
                            accepted.push((sent, received, prompt + max_tokens));
                            assert!(number(&headers, "x-ratelimit-remaining-requests") < RPM);
                        }
                        429 => {
                            let wait = number(&headers, "retry-after-ms");
                            assert!(wait <= WINDOW, "{wait}");
                            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                (accepted, usage)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut usage = (0, 0);
    for client in clients {
        let (mut a, u) = client.await.unwrap();
        accepted.append(&mut a);
        usage = (usage.0 + u.0, usage.1 + u.1);
    }
    let elapsed = started.elapsed().as_millis() as u64;
    accepted.sort();
    // From the clients' side: requests surely accepted within one window of another (sent after
    // it came back, back before a window after it was sent) never add up past the limits.
    let window = Duration::from_millis(WINDOW);
    for (i, &(sent_i, received_i, cost_i)) in accepted.iter().enumerate() {
        let (mut requests, mut tokens) = (1, cost_i);
        for (j, &(sent_j, received_j, cost_j)) in accepted.iter().enumerate() {
            if j != i && sent_j >= received_i && received_j < sent_i + window {
                requests += 1;
                tokens += cost_j;
            }
        }
        assert!(
            requests <= RPM && tokens <= TPM,
            "{requests} requests, {tokens} tokens in a window"
        );
    }
    let windows = elapsed / WINDOW + 1;
    assert!(accepted.len() as u64 <= RPM * windows);
    assert!(
        accepted.len() as u64 >= RPM,
        "the limit was reached: {}",
        accepted.len()
    );
    // The stats agree with the clients, and their peaks stay within the limits.
    let stats = server.stats("default").unwrap();
    assert_eq!(stats.by_status.get("200").copied(), Some(accepted.len() as u64));
    let tokens = stats.tokens.unwrap();
    assert_eq!((tokens.input, tokens.output), usage);
    let peaks: BTreeMap<_, _> = tokens.limits.iter().map(|l| (l.counts.as_str(), l)).collect();
    assert!(peaks["requests"].max_in_window <= RPM && peaks["requests"].max_in_window > 0);
    assert!(peaks["tokens"].max_in_window <= TPM, "{:?}", peaks["tokens"]);
    assert!(stats.max_accepted_in_window <= RPM);
    server.stop().await.unwrap();
}

/// The stream with its ids and times blanked out.
fn blank_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"id\":\"") {
        out.push_str(&rest[..at + 6]);
        rest = &rest[at + 6..];
        let end = rest.find('"').unwrap();
        let id = &rest[..end];
        out.push_str(&id[..id.find(['-', '_']).map_or(0, |p| p + 1)]);
        out.push_str("ID");
        rest = &rest[end..];
    }
    out.push_str(rest);
    let mut result = String::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find("\"created\":") {
        result.push_str(&rest[..at + 10]);
        rest = &rest[at + 10..];
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
        result.push('0');
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

#[tokio::test]
async fn streams_are_framed_byte_for_byte_as_each_provider_frames_them() {
    let mut config = ProviderConfig::new(Provider::Openai);
    config.seed = 11;
    let server = single(config).await;
    let http = reqwest::Client::new();
    let request = json!({"model": "gpt-4o-mini", "max_tokens": 3,
                         "messages": [{"role": "user", "content": "hi"}]});
    let plain: Value = http
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = plain["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = http
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "content-type"),
        "text/event-stream; charset=utf-8"
    );
    let body = blank_ids(&response.text().await.unwrap());
    // The same request streams the same answer, one token (word) per chunk.
    let pieces: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| if i == 0 { w.to_owned() } else { format!(" {w}") })
        .collect();
    let (p, c) = (
        plain["usage"]["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(c, pieces.len() as u64);
    let finish = plain["choices"][0]["finish_reason"].as_str().unwrap();
    let head = r#"{"choices":["#;
    let tail = r#"],"created":0,"id":"chatcmpl-ID","model":"gpt-4o-mini","object":"chat.completion.chunk","system_fingerprint":"fp_tem_mock","usage":null}"#;
    let mut expected = format!(
        "data: {head}{{\"delta\":{{\"content\":\"\",\"refusal\":null,\"role\":\"assistant\"}},\"finish_reason\":null,\"index\":0,\"logprobs\":null}}{tail}\n\n"
    );
    for piece in &pieces {
        expected.push_str(&format!(
            "data: {head}{{\"delta\":{{\"content\":\"{piece}\"}},\"finish_reason\":null,\"index\":0,\"logprobs\":null}}{tail}\n\n"
        ));
    }
    expected.push_str(&format!(
        "data: {head}{{\"delta\":{{}},\"finish_reason\":\"{finish}\",\"index\":0,\"logprobs\":null}}{tail}\n\n"
    ));
    expected.push_str(&format!(
        "data: {{\"choices\":[],\"created\":0,\"id\":\"chatcmpl-ID\",\"model\":\"gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_tem_mock\",\"usage\":{{\"completion_tokens\":{c},\"prompt_tokens\":{p},\"total_tokens\":{}}}}}\n\n",
        p + c
    ));
    expected.push_str("data: [DONE]\n\n");
    assert_eq!(body, expected);
    server.stop().await.unwrap();

    let mut config = ProviderConfig::new(Provider::Anthropic);
    config.seed = 11;
    let server = single(config).await;
    let request = json!({"model": "claude-haiku-4-5", "max_tokens": 2, "stream": true,
                         "messages": [{"role": "user", "content": "hi"}]});
    let mut plain_request = request.clone();
    plain_request["stream"] = json!(false);
    let response = http
        .post(format!("{}/v1/messages", server.url()))
        .json(&request)
        .send()
        .await
        .unwrap();
    let body = blank_ids(&response.text().await.unwrap());
    // The answer is drawn from the request's bytes, so the non-streamed twin differs; read the
    // text from the deltas and check every frame around them.
    let deltas: Vec<String> = body
        .split("\"text\":\"")
        .skip(2)
        .map(|s| s[..s.find('"').unwrap()].to_owned())
        .collect();
    let n = deltas.len();
    assert!((1..=2).contains(&n), "{body}");
    let input = plain_input_tokens(&server, &plain_request).await;
    let mut expected = format!(
        "event: message_start\ndata: {{\"message\":{{\"content\":[],\"id\":\"msg_ID\",\"model\":\"claude-haiku-4-5\",\"role\":\"assistant\",\"stop_reason\":null,\"stop_sequence\":null,\"type\":\"message\",\"usage\":{{\"input_tokens\":{input},\"output_tokens\":1}}}},\"type\":\"message_start\"}}\n\n\
         event: content_block_start\ndata: {{\"content_block\":{{\"text\":\"\",\"type\":\"text\"}},\"index\":0,\"type\":\"content_block_start\"}}\n\n\
         event: ping\ndata: {{\"type\":\"ping\"}}\n\n"
    );
    for text in &deltas {
        expected.push_str(&format!(
            "event: content_block_delta\ndata: {{\"delta\":{{\"text\":\"{text}\",\"type\":\"text_delta\"}},\"index\":0,\"type\":\"content_block_delta\"}}\n\n"
        ));
    }
    let stop = if n == 2 { "max_tokens" } else { "end_turn" };
    expected.push_str(&format!(
        "event: content_block_stop\ndata: {{\"index\":0,\"type\":\"content_block_stop\"}}\n\n\
         event: message_delta\ndata: {{\"delta\":{{\"stop_reason\":\"{stop}\",\"stop_sequence\":null}},\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{n}}}}}\n\n\
         event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    ));
    assert_eq!(body, expected);
    server.stop().await.unwrap();
}

async fn plain_input_tokens(server: &MockServer, request: &Value) -> u64 {
    let (_, _, counted) = post(&format!("{}/v1/messages/count_tokens", server.url()), request).await;
    counted["input_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn a_stream_is_paced_by_the_latency_model() {
    let mut config = ProviderConfig::new(Provider::Openai);
    config.latency.first_token_ms = [150, 150];
    config.latency.per_token_ms = [40, 40];
    let server = single(config).await;
    let mut request = chat(4);
    request["stream"] = json!(true);
    let sent = Instant::now();
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&request)
        .send()
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        if String::from_utf8_lossy(&chunk).contains("\"content\":\"") {
            arrivals.push(sent.elapsed());
        }
    }
    assert!(arrivals[0] >= Duration::from_millis(150), "{arrivals:?}");
    for pair in arrivals.windows(2).skip(1) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(35), "{arrivals:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn seeded_answers_are_reproducible() {
    let answer = |seed: u64, content: &'static str| async move {
        let mut config = ProviderConfig::new(Provider::Openai);
        config.seed = seed;
        let server = single(config).await;
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 50,
                          "messages": [{"role": "user", "content": content}]});
        let url = format!("{}/v1/chat/completions", server.url());
        let (_, _, first) = post(&url, &body).await;
        let (_, _, again) = post(&url, &body).await;
        server.stop().await.unwrap();
        let text = |v: &Value| v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        assert_eq!(text(&first), text(&again));
        assert_eq!(first["usage"], again["usage"]);
        text(&first)
    };
    let a = answer(7, "one").await;
    assert_eq!(a, answer(7, "one").await, "another server, the same seed");
    assert_ne!(a, answer(8, "one").await);
    assert_ne!(a, answer(7, "two").await);
}

#[tokio::test]
async fn provider_services_live_under_their_prefix_in_multi_mode() {
    let server = MockServer::builder().bind("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();
    let (status, _, created) = post(
        &format!("{}/service/llm", server.url()),
        &json!({"kind": "anthropic", "limits": {"rpm": 10}, "models": {"claude-x": {"otpm": 100}},
                "latency": {"firstTokenMs": [0, 0], "perTokenMs": [0, 0]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _, bad) = post(
        &format!("{}/service/bad", server.url()),
        &json!({"kind": "anthropic", "limits": {"tpm": 10}}),
    )
    .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limits.tpm"))
    );
    let (status, _, bad) = post(
        &format!("{}/service/bad", server.url()),
        &json!({"kind": "gemini"}),
    )
    .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind"))
    );

    let models: Value = http
        .get(format!("{}/mock/llm/v1/models", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "claude-x");
    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let (status, headers, _) = post(&format!("{}/mock/llm/v1/messages", server.url()), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(number(&headers, "anthropic-ratelimit-requests-remaining"), 9);
    assert_eq!(
        number(&headers, "anthropic-ratelimit-output-tokens-limit"),
        100,
        "the model's own"
    );
    let mut other = body.clone();
    other["model"] = json!("claude-y");
    let (status, _, missing) = post(&format!("{}/mock/llm/v1/messages", server.url()), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["type"], "not_found_error");
    let (status, _, missing) = post(&format!("{}/mock/llm/v1/nothing", server.url()), &body).await;
    assert_eq!(
        (status, missing["error"]["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found_error"))
    );
    // The root's provider routes belong to single mode.
    let (status, _, _) = post(&format!("{}/v1/messages", server.url()), &body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let stats: Value = http
        .get(format!("{}/service/llm/stats", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["byStatus"]["200"], 2, "the models and the message");
    assert_eq!(stats["byStatus"]["404"], 2);
    assert!(stats["tokens"]["output"].as_u64().unwrap() >= 1);
    assert_eq!(stats["tokens"]["limits"][1]["scope"], "claude-x");
    assert_eq!(stats["tokens"]["limits"][1]["counts"], "outputTokens");
    match &server.state().services["llm"] {
        Definition::Provider(config) => assert_eq!(config.provider, Provider::Anthropic),
        other => panic!("{other:?}"),
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn keys_are_checked_and_bad_bodies_get_the_providers_400() {
    let mut config = ProviderConfig::new(Provider::Openai);
    config.api_key = Some("sk-test-123456".to_owned());
    let server = single(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.url());
    let missing = http.post(&url).json(&chat(1)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let wrong = http
        .post(&url)
        .bearer_auth("sk-nope")
        .json(&chat(1))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["error"]["code"], "invalid_api_key");
    let ok = http
        .post(&url)
        .bearer_auth("sk-test-123456")
        .json(&chat(1))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    for (body, param) in [
        ("{not json", Value::Null),
        ("[]", Value::Null),
        (r#"{"messages": []}"#, json!("model")),
        (r#"{"model": 5, "messages": []}"#, json!("model")),
        (r#"{"model": "m"}"#, json!("messages")),
        (r#"{"model": "m", "messages": [5]}"#, json!("messages[0]")),
        (
            r#"{"model": "m", "messages": [{"content": "x"}]}"#,
            json!("messages[0].role"),
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
            json!("max_tokens"),
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": 1}"#,
            json!("stream_options"),
        ),
    ] {
        let response = http
            .post(&url)
            .bearer_auth("sk-test-123456")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    server.stop().await.unwrap();

    let mut config = ProviderConfig::new(Provider::Anthropic);
    config.api_key = Some("sk-ant-test".to_owned());
    let server = single(config).await;
    let url = format!("{}/v1/messages", server.url());
    let body = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
    let response = http
        .post(&url)
        .header("x-api-key", "nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
    let response = http
        .post(&url)
        .header("x-api-key", "sk-ant-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["message"], "anthropic-version: header is required");
    // The API takes the key as a bearer token too, and recent SDKs send it so.
    let response = http
        .post(&url)
        .bearer_auth("sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Garbage of every shape: a 400, never a panic (the server answers after it all).
    for body in [
        "",
        "null",
        "{\"model\":",
        "{\"model\":\"m\",\"messages\":{}}",
        "\u{0}\u{ff}",
        "{\"messages\":[[[[]]]]}",
    ] {
        let response = http
            .post(&url)
            .header("x-api-key", "sk-ant-test")
            .header("anthropic-version", "2023-06-01")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
    }
    let response = http
        .post(&url)
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_headers_can_be_left_out() {
    let mut config = openai(10, 1_000, 60_000);
    config.rate_limit_headers = false;
    let server = single(config).await;
    let (status, headers, _) = post(&format!("{}/v1/chat/completions", server.url()), &chat(1)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.keys().all(|k| !k.as_str().starts_with("x-ratelimit")),
        "{headers:?}"
    );
    server.stop().await.unwrap();
}
