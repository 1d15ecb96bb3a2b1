//! # mock-server: the APIs to test batch jobs against
//!
//! An HTTP API simulator in the shape of `@qianxude/tem`'s mock server — per-service
//! concurrency caps (503), rate limits (429, token bucket, fixed or sliding window, with
//! `Retry-After` and `X-RateLimit-*`), a weighted budget, random errors with their configured
//! status, latency — with exact statistics so a test can prove a client never went over a
//! limit; and a mock of the Teraslice cluster REST API.
//!
//! Map: [`MockServer`] starts either in-process ([`server`]); [`config`] is a service's
//! configuration and its validation ([`key_case`]: its keys in camelCase or snake_case);
//! [`service`] is what happens to one request (`echo`: the answer that shows it back); [`limit`]
//! holds the rate-limit algorithms; [`stats`] the counters; [`routes`] the simulator's HTTP
//! surface; [`provider`] the OpenAI- and Anthropic-shaped services (their wire formats, token
//! limits and rate-limit headers); [`client`] a typed client; [`teraslice`] the cluster mock.

pub mod client;
pub mod config;
mod echo;
mod error;
pub mod key_case;
mod limit;
pub mod provider;
pub mod routes;
pub mod server;
pub mod service;
pub mod stats;
pub mod teraslice;

pub use client::MockClient;
pub use config::{
    Algorithm, Budget, ConfigError, Definition, ErrorSimulation, Headers, RateLimit, ServiceConfig,
};
pub use error::Error;
pub use key_case::{KeyCase, config_keys};
pub use provider::{Latency, Limits, Provider, ProviderConfig};
pub use routes::{DEFAULT_SERVICE, Mode};
pub use server::{MockServer, MockServerBuilder, ServerState};
pub use stats::{LimitPeak, Stats, TokenStats};
pub use teraslice::{Clock, ManualClock, TerasliceOptions};
