"""The official OpenAI and Anthropic SDKs against `tem mock-server --kind …`.

Usage: check.py OPENAI_URL OPENAI_TIGHT_URL ANTHROPIC_URL ANTHROPIC_TIGHT_URL
(the tight services allow one request per minute). Prints 'N passed, 0 failed' or fails.
"""

import sys

import anthropic
import openai

openai_url, openai_tight, anthropic_url, anthropic_tight = sys.argv[1:5]
passed = 0


def check(name, fn):
    global passed
    fn()
    passed += 1
    print(f"ok  {name}")


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about limits."}]


def words(text):
    """Every answer word is one token: the count the usage must report."""
    return len(text.split(" "))


def openai_client(base, key="sk-test"):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def openai_chat():
    client = openai_client(openai_url)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)
    text = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.id.startswith("chatcmpl-"), plain
    assert plain.usage.completion_tokens == words(text), (plain.usage, text)
    assert 1 <= plain.usage.completion_tokens <= 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    assert plain.choices[0].finish_reason == ("length" if plain.usage.completion_tokens == 12 else "stop")
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)
    assert again.choices[0].message.content == text, "seeded: the same request, the same answer"
    assert again.usage.prompt_tokens == plain.usage.prompt_tokens

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)
    remaining = int(raw.headers["x-ratelimit-remaining-requests"])
    assert int(raw.headers["x-ratelimit-limit-requests"]) == 1000 and remaining == 1000 - 3, raw.headers
    assert raw.headers["x-ratelimit-reset-requests"] == "1m0s", raw.headers
    used = 3 * (plain.usage.prompt_tokens + 12)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 1_000_000 - used, raw.headers
    assert raw.parse().choices[0].message.content == text

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=12, stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text, (streamed, text)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason], finish
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage, chunks[-1]


def openai_other_routes():
    client = openai_client(openai_url)
    completion = client.completions.create(model="gpt-4o-mini", prompt="Once upon a time", max_tokens=5)
    assert completion.usage.completion_tokens == words(completion.choices[0].text) <= 5, completion
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    assert [len(d.embedding) for d in embedding.data] == [1536, 1536], "base64 decoded by the SDK"
    assert abs(sum(x * x for x in embedding.data[0].embedding) - 1.0) < 1e-3, "unit vectors"
    assert embedding.usage.prompt_tokens == 3, embedding.usage
    floats = client.embeddings.create(model="text-embedding-3-small", input="one", dimensions=8, encoding_format="float")
    assert len(floats.data[0].embedding) == 8
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def openai_errors():
    try:
        openai_client(openai_url, key="sk-wrong").chat.completions.create(model="m", messages=MESSAGES)
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key", e
    try:
        openai_client(openai_url).chat.completions.create(model="m", messages=[{"role": "robot", "content": "x"}])
        raise AssertionError("a bad role was accepted")
    except openai.BadRequestError as e:
        assert e.param == "messages[0].role", e

    tight = openai_client(openai_tight)
    tight.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
    try:
        tight.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
        raise AssertionError("the second request in a minute was accepted at 1 RPM")
    except openai.RateLimitError as e:
        assert e.status_code == 429 and e.code == "rate_limit_exceeded", e
        assert e.type == "requests", e
        retry_after = int(e.response.headers["retry-after"])
        assert 1 <= retry_after <= 60, e.response.headers
        assert int(e.response.headers["retry-after-ms"]) <= 60_000
        assert e.response.headers["x-ratelimit-remaining-requests"] == "0"


def anthropic_client(base, key="sk-test"):
    return anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)


ASK = [{"role": "user", "content": "Tell me about limits."}]


def anthropic_messages():
    client = anthropic_client(anthropic_url)
    plain = client.messages.create(model="claude-haiku-4-5", max_tokens=12, system="Be brief.", messages=ASK)
    text = plain.content[0].text
    assert plain.type == "message" and plain.role == "assistant" and plain.id.startswith("msg_"), plain
    assert plain.usage.output_tokens == words(text), (plain.usage, text)
    assert plain.stop_reason == ("max_tokens" if plain.usage.output_tokens == 12 else "end_turn")
    counted = client.messages.count_tokens(model="claude-haiku-4-5", system="Be brief.", messages=ASK)
    assert counted.input_tokens == plain.usage.input_tokens, (counted, plain.usage)

    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=12, system="Be brief.", messages=ASK)
    h = raw.headers
    assert h["anthropic-ratelimit-requests-remaining"] == "998", h
    assert int(h["anthropic-ratelimit-input-tokens-remaining"]) == 1_000_000 - 2 * plain.usage.input_tokens, h
    assert int(h["anthropic-ratelimit-output-tokens-remaining"]) == 100_000 - 2 * plain.usage.output_tokens, h
    assert h["anthropic-ratelimit-output-tokens-reset"].endswith("Z"), h

    with client.messages.stream(model="claude-haiku-4-5", max_tokens=12, system="Be brief.", messages=ASK) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text, (streamed, text)
    assert final.usage.output_tokens == plain.usage.output_tokens, final.usage
    assert final.usage.input_tokens == plain.usage.input_tokens, final.usage
    assert final.stop_reason == plain.stop_reason
    assert "claude-haiku-4-5" in [m.id for m in client.models.list()]


def anthropic_errors():
    try:
        anthropic_client(anthropic_url, key="sk-wrong").messages.create(model="m", max_tokens=1, messages=ASK)
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401, e
    try:
        anthropic_client(anthropic_url).messages.create(model="m", max_tokens=0, messages=ASK)
        raise AssertionError("max_tokens 0 was accepted")
    except anthropic.BadRequestError as e:
        assert "max_tokens" in e.body["error"]["message"], e.body

    tight = anthropic_client(anthropic_tight)
    tight.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=ASK)
    try:
        tight.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=ASK)
        raise AssertionError("the second request in a minute was accepted at 1 RPM")
    except anthropic.RateLimitError as e:
        assert e.status_code == 429 and e.body["error"]["type"] == "rate_limit_error", e.body
        retry_after = int(e.response.headers["retry-after"])
        assert 1 <= retry_after <= 60, e.response.headers
        assert e.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


check("openai: chat, plain and streamed, usage and headers", openai_chat)
check("openai: completions, embeddings, models", openai_other_routes)
check("openai: 401, 400 naming the field, 429 as RateLimitError with retry-after", openai_errors)
check("anthropic: messages, plain and streamed, usage, count_tokens and headers", anthropic_messages)
check("anthropic: 401, 400, 429 as RateLimitError with retry-after", anthropic_errors)
print(f"{passed} passed, 0 failed")
