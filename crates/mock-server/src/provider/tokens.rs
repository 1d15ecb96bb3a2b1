//! Token counting: OpenAI's `o200k_base` BPE (GPT-4o, 4.1, o-series, GPT-5), from `tiktoken-rs`,
//! which ships the vocabulary inside the crate, so counts are exact for those models and need
//! no network. Anthropic publishes no tokenizer; its services count with the same BPE, so a
//! client that counts the same way is exact against this mock too. One count feeds `usage` and
//! the limits.
//!
//! A chat prompt counts as OpenAI's cookbook does: 3 tokens per message, its role and content,
//! 1 more (plus the name) for a `name`, and 3 priming the reply.

use std::sync::LazyLock;

use tiktoken_rs::CoreBPE;

static BPE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| match tiktoken_rs::o200k_base() {
    Ok(bpe) => Some(bpe),
    Err(error) => {
        // Cannot happen with the embedded vocabulary; count approximately rather than fail.
        tracing::error!(%error, "the o200k_base vocabulary did not load: counting ~4 bytes a token");
        None
    }
});

/// Per message, for its framing.
pub(crate) const PER_MESSAGE: u64 = 3;
/// For a message's `name`.
pub(crate) const PER_NAME: u64 = 1;
/// Once per prompt, priming the reply.
pub(crate) const REPLY_PRIMING: u64 = 3;

/// Loads the vocabulary now, so the first request does not pay for it.
pub(crate) fn warm_up() {
    LazyLock::force(&BPE);
}

/// Tokens in `text`.
pub(crate) fn count(text: &str) -> u64 {
    match &*BPE {
        Some(bpe) => bpe.count_ordinary(text) as u64,
        None => text.len().div_ceil(4) as u64,
    }
}

/// Sums a chat prompt message by message.
#[derive(Debug, Default)]
pub(crate) struct PromptCount(u64);

impl PromptCount {
    /// Adds one message's framing and role.
    pub fn message(&mut self, role: &str) {
        self.0 += PER_MESSAGE + count(role);
    }

    /// Adds a name's tokens.
    pub fn name(&mut self, name: &str) {
        self.0 += PER_NAME + count(name);
    }

    /// Adds text (content, or a system prompt).
    pub fn text(&mut self, text: &str) {
        self.0 += count(text);
    }

    /// The whole prompt, reply priming included.
    pub fn total(&self) -> u64 {
        self.0 + REPLY_PRIMING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_o200k_bases() {
        // Known o200k_base counts (as tiktoken gives them).
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
        assert_eq!(count("tiktoken is great!"), 6);
    }

    #[test]
    fn a_chat_prompt_counts_like_the_cookbook() {
        let mut p = PromptCount::default();
        p.message("user");
        p.text("hello world");
        // 3 framing + 1 role + 2 content + 3 priming.
        assert_eq!(p.total(), 9);
    }
}
