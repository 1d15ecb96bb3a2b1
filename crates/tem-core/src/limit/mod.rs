//! Limits on how hard the engine calls a remote API: rate ([`RateLimiter`], GCRA), weighted
//! budget ([`Budget`]), adaptive concurrency ([`AdaptiveConcurrency`], AIMD), and a circuit
//! breaker ([`CircuitBreaker`]).

mod breaker;
mod budget;
mod concurrency;
mod rate;

pub use breaker::{Admission, BreakerConfig, BreakerError, BreakerState, CircuitBreaker};
pub use budget::Budget;
pub use concurrency::{AdaptiveConcurrency, Aimd, ConcurrencyPermit};
pub use rate::{Gcra, Grant, Quota, RateLimiter};
