//! Limits on how hard the engine calls a remote API: rate ([`RateLimiter`], GCRA), weighted
//! budget ([`Budget`]), and adaptive concurrency ([`AdaptiveConcurrency`], AIMD).

mod budget;
mod concurrency;
mod rate;

pub use budget::Budget;
pub use concurrency::{AdaptiveConcurrency, Aimd, ConcurrencyPermit};
pub use rate::{Gcra, Grant, Quota, RateLimiter};
