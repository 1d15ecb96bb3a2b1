//! A request once read, whichever provider it came to, and the answer drawn for it.

use super::answer;
use super::quota::Cost;

/// The provider routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// OpenAI `POST /v1/completions`.
    Completions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `GET /v1/models`.
    Models,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ask {
    pub endpoint: Endpoint,
    pub model: String,
    pub prompt_tokens: u64,
    /// The most it may answer; 0 for embeddings.
    pub max_tokens: u64,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Embeddings: how many inputs, of how many dimensions, and base64 or floats.
    pub inputs: usize,
    pub dimensions: usize,
    pub base64: bool,
    /// What the answer is drawn from, beside the seed.
    pub fingerprint: u64,
}

impl Ask {
    /// A request of `endpoint` for `model` with everything else empty.
    pub fn new(endpoint: Endpoint, model: &str) -> Self {
        Ask {
            endpoint,
            model: model.to_owned(),
            prompt_tokens: 0,
            max_tokens: 0,
            stream: false,
            include_usage: false,
            inputs: 0,
            dimensions: 0,
            base64: false,
            fingerprint: 0,
        }
    }
}

/// The answer drawn for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// One token each.
    pub pieces: Vec<String>,
    /// It stopped at `max_tokens` (`finish_reason: "length"`, `stop_reason: "max_tokens"`).
    pub truncated: bool,
}

impl Answer {
    /// Draws the answer to `ask` from the seed and the request's bytes.
    pub fn draw(ask: &Ask, seed: u64) -> Self {
        if ask.max_tokens == 0 {
            return Answer {
                pieces: Vec::new(),
                truncated: false,
            };
        }
        let mut rng = answer::rng(seed, ask.fingerprint);
        let n = answer::length(&mut rng, ask.max_tokens);
        Answer {
            pieces: answer::pieces(&mut rng, n),
            truncated: n == ask.max_tokens,
        }
    }

    pub fn tokens(&self) -> u64 {
        self.pieces.len() as u64
    }

    pub fn text(&self) -> String {
        self.pieces.concat()
    }

    /// What the request counts against the limits.
    pub fn cost(&self, ask: &Ask) -> Cost {
        Cost {
            input: ask.prompt_tokens,
            max_output: ask.max_tokens,
            output: self.tokens(),
        }
    }
}
