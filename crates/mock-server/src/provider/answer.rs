//! Deterministic answers: lorem-like words drawn from the service's seed and the request, so
//! the same request gets the same answer, of a length drawn from `1..=max_tokens`. Every word is
//! one token alone and one with its leading space, and words never merge, so an answer of `n`
//! words is exactly `n` tokens and streams as one token per chunk.

use std::sync::LazyLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use super::tokens;

const CANDIDATES: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "tempor",
    "ut",
    "labore",
    "et",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "ex",
    "ea",
    "commodo",
    "duis",
    "aute",
    "in",
    "velit",
    "esse",
    "fugiat",
    "nulla",
    "pariatur",
    "sint",
    "non",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "id",
    "est",
    "the",
    "and",
    "of",
    "to",
    "a",
    "is",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "at",
    "by",
    "from",
    "this",
    "be",
    "or",
    "an",
    "are",
    "was",
    "not",
    "but",
    "all",
    "we",
    "can",
    "will",
    "one",
    "more",
    "time",
    "work",
    "data",
    "rate",
    "limit",
    "token",
    "batch",
    "model",
    "answer",
    "test",
];

/// The candidates that are one token both alone and after a space.
static WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let words: Vec<_> = CANDIDATES
        .iter()
        .copied()
        .filter(|w| tokens::count(w) == 1 && tokens::count(&format!(" {w}")) == 1)
        .collect();
    if words.is_empty() {
        // Only with the approximate count (no vocabulary): short words are one token there too.
        vec!["a"]
    } else {
        words
    }
});

/// A stable hash of what a request asks: its fields in key order, whatever their order or
/// spacing on the wire, less how it wants the answer delivered (`stream`, `stream_options`),
/// so a request streamed and not streamed gets the same answer.
pub(crate) fn fingerprint(object: &Map<String, Value>) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (key, value) in object {
        if key == "stream" || key == "stream_options" {
            continue;
        }
        feed(key.as_bytes());
        feed(value.to_string().as_bytes());
    }
    hash
}

/// A request's own random source: the seed and the request's fingerprint.
pub(crate) fn rng(seed: u64, fingerprint: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ fingerprint)
}

/// How many tokens to answer: `1..=max_tokens`.
pub(crate) fn length(rng: &mut StdRng, max_tokens: u64) -> u64 {
    rng.random_range(1..=max_tokens.max(1))
}

/// `n` tokens of text, as the pieces a stream sends (the first without a leading space).
pub(crate) fn pieces(rng: &mut StdRng, n: u64) -> Vec<String> {
    let words = &*WORDS;
    (0..n)
        .map(|i| {
            let word = words[rng.random_range(0..words.len())];
            if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// A deterministic unit vector of `dimensions` for an embedding.
pub(crate) fn embedding(rng: &mut StdRng, dimensions: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dimensions).map(|_| rng.random_range(-1.0..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_n_pieces_is_n_tokens() {
        assert!(WORDS.len() > 20, "{:?}", *WORDS);
        let mut r = rng(7, 1);
        for n in [1, 2, 5, 40, 300] {
            let text = pieces(&mut r, n).concat();
            assert_eq!(tokens::count(&text), n, "{text}");
        }
    }

    #[test]
    fn the_same_seed_and_request_give_the_same_answer() {
        let answer = |seed, request: serde_json::Value| {
            let mut r = rng(seed, fingerprint(request.as_object().unwrap()));
            let n = length(&mut r, 64);
            pieces(&mut r, n).concat()
        };
        use serde_json::json;
        let a = || json!({"model": "m", "messages": ["a"]});
        assert_eq!(answer(1, a()), answer(1, a()));
        assert_eq!(
            answer(1, a()),
            answer(1, json!({"messages": ["a"], "stream": true, "model": "m"})),
            "order and delivery do not matter"
        );
        assert_ne!(answer(1, a()), answer(2, a()));
        assert_ne!(
            answer(1, a()),
            answer(1, json!({"model": "m", "messages": ["b"]}))
        );
    }
}
