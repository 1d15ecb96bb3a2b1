//! The resilience primitives on their own, for code that is not a durable batch: retry with
//! backoff, a bounded concurrent runner, a semaphore (and the rate limiter in [`crate::limit`]).

mod bulkhead;
mod retry;
mod semaphore;

pub use bulkhead::{Bulkhead, LimitOptions, OpError, run_with_limit};
pub use retry::{Retried, RetryError, retry, retry_with};
pub use semaphore::Semaphore;
