//! LLM-shaped services: `kind = "openai"` or `"anthropic"`, speaking each provider's wire
//! format so the official SDKs work against them unchanged, with token-counted limits and the
//! providers' rate-limit headers tracking the live quota.
//!
//! Map: [`config`] is a service's configuration; [`service`] what happens to one request;
//! `openai` and `anthropic` each provider's routes, validation, JSON and stream framing;
//! `problem` the errors both render; `ask` a request once read and its drawn answer; `answer`
//! the seeded text; `tokens` the counting; `quota` the limits; `headers` the rate-limit
//! headers; `latency` the pace; `sse` the event stream.

mod answer;
mod anthropic;
mod ask;
pub mod config;
mod headers;
mod latency;
mod openai;
mod problem;
mod quota;
pub mod service;
mod sse;
mod tokens;

pub use config::{Latency, Limits, Provider, ProviderConfig};
pub use service::ProviderService;
