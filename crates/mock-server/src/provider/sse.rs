//! Server-sent events paced by the latency model: each event is written after its wait, as one
//! chunk, and the response holds the service's concurrency slot until its last event is out
//! (or the client hangs up).

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::{Body, Bytes};

/// One event, framed as the provider frames it, and how long to wait before sending it.
#[derive(Debug)]
pub(crate) struct Event {
    pub wait: Duration,
    pub frame: String,
}

/// `data: {json}\n\n` (OpenAI's frame).
pub(crate) fn data(json: &str) -> String {
    format!("data: {json}\n\n")
}

/// `event: NAME\ndata: {json}\n\n` (Anthropic's frame).
pub(crate) fn named(name: &str, json: &str) -> String {
    format!("event: {name}\ndata: {json}\n\n")
}

/// The body sending `events` at their pace; `hold` is dropped after the last one.
pub(crate) fn body<H: Send + 'static>(events: Vec<Event>, hold: H) -> Body {
    if events.iter().all(|e| e.wait.is_zero()) {
        let all: String = events.into_iter().map(|e| e.frame).collect();
        drop(hold);
        return Body::from(all);
    }
    let state = (VecDeque::from(events), Some(hold));
    let stream = futures::stream::unfold(state, |(mut events, mut hold)| async move {
        let Some(event) = events.pop_front() else {
            drop(hold.take());
            return None;
        };
        if !event.wait.is_zero() {
            tokio::time::sleep(event.wait).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(event.frame)),
            (events, hold),
        ))
    });
    Body::from_stream(stream)
}
