//! Limits on how hard the engine calls a remote API: rate ([`RateLimiter`], GCRA), weighted
//! budget ([`Budget`]), adaptive concurrency ([`AdaptiveConcurrency`], AIMD), a circuit
//! breaker ([`CircuitBreaker`]), and limits learned from a provider's rate-limit headers
//! ([`headers`] reads every dialect, [`LearnedLimits`] paces by what they said).

mod breaker;
mod budget;
mod concurrency;
pub mod headers;
mod learned;
mod rate;

pub use breaker::{Admission, BreakerConfig, BreakerError, BreakerState, CircuitBreaker};
pub use budget::Budget;
pub use concurrency::{AdaptiveConcurrency, Aimd, ConcurrencyPermit};
pub use headers::{Meter, RateLimitHeaders, Reading};
pub use learned::{Demand, LearnedLimit, LearnedLimits, Room, Ticket};
pub use rate::{Gcra, Grant, Quota, RateLimiter};
