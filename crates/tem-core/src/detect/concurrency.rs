//! Finding how many requests the API serves at once: bursts of simultaneous requests, doubling
//! until one overflows (502/503/504), then the overflow's own count and a check of the maximum.
//!
//! A burst of N that overflows a cap of C gets about C answers and N − C refusals (when the
//! requests overlap at the server, which any real latency ensures), so the first overflowing
//! burst already names the cap. A burst of exactly that size must then pass: the limit is seen
//! from both sides. If it does not (requests overlapped less than assumed), bisection between
//! the last clean burst and the failed one narrows it to within 10 %. A 429 is the rate limit
//! speaking, not concurrency: the search stops there rather than shrink the estimate.

use std::time::Duration;

use super::probe::{Answer, Prober, count};
use super::{DetectError, Finding, Log};

/// What the concurrency search learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrencyFinding {
    /// The largest burst that passed.
    pub passed: u32,
    /// The smallest burst that overflowed, if any did.
    pub overflowed: Option<u32>,
    pub finding: Finding,
}

pub async fn search(
    prober: &mut Prober,
    max: u32,
    evidence: &mut Log,
) -> Result<ConcurrencyFinding, DetectError> {
    let mut passed = 1u32;
    let mut size = 2u32.min(max);
    let mut overflow: Option<(u32, u32)> = None;
    while size > passed {
        let Some(outcome) = try_burst(prober, size, evidence).await? else {
            return Ok(stopped(passed, None, evidence));
        };
        match outcome {
            Burst::Passed => passed = size,
            Burst::Overflowed { accepted } => {
                overflow = Some((size, accepted));
                break;
            }
            Burst::RateLimited { .. } => return Ok(stopped(passed, None, evidence)),
        }
        size = size.saturating_mul(2).min(max);
    }
    let Some((mut failed, accepted)) = overflow else {
        evidence.push(format!(
            "no burst overflowed, up to {passed} at once (the most tested)"
        ));
        return Ok(ConcurrencyFinding {
            passed,
            overflowed: None,
            finding: Finding::AtLeast,
        });
    };
    evidence.push(format!(
        "a burst of {failed} overflowed: {accepted} answered, {} refused with 502/503/504",
        failed - accepted
    ));
    // The overflow names the cap; check it, then bisect only if the check disagrees.
    let named = accepted.clamp(passed, failed - 1);
    if named > passed {
        match try_burst(prober, named, evidence).await? {
            None | Some(Burst::RateLimited { .. }) => return Ok(stopped(passed, Some(failed), evidence)),
            Some(Burst::Passed) => passed = named,
            Some(Burst::Overflowed { .. }) => failed = named,
        }
    }
    while passed != accepted && failed - passed > 1 && failed - passed > passed / 10 {
        let middle = passed + (failed - passed) / 2;
        match try_burst(prober, middle, evidence).await? {
            None | Some(Burst::RateLimited { .. }) => return Ok(stopped(passed, Some(failed), evidence)),
            Some(Burst::Passed) => passed = middle,
            Some(Burst::Overflowed { .. }) => failed = middle,
        }
    }
    // Seen from both sides: a burst of `passed` passed, and either one more overflowed or an
    // overflowing burst was answered exactly `passed` times.
    let exact = failed == passed + 1 || passed == accepted;
    evidence.push(if exact {
        format!("a burst of {passed} passed; above it the API refused: the cap is {passed}")
    } else {
        format!("bursts of {passed} passed and of {failed} overflowed: the cap is between them")
    });
    Ok(ConcurrencyFinding {
        passed,
        overflowed: Some(failed),
        finding: if exact { Finding::Exact } else { Finding::Bracketed },
    })
}

enum Burst {
    Passed,
    Overflowed {
        accepted: u32,
    },
    /// Refused by the rate limit; `wait` is how long the API asked to wait.
    RateLimited {
        wait: Option<Duration>,
    },
}

/// One burst; `None` when the budget cannot pay for it. A burst that meets the rate limit is
/// retried once after the wait the API asked for (`Retry-After`), since a 429 says the window's
/// quota ran out, not that the burst was too wide.
async fn try_burst(prober: &mut Prober, size: u32, evidence: &mut Log) -> Result<Option<Burst>, DetectError> {
    let first = one_burst(prober, size, evidence).await?;
    let Some(Burst::RateLimited { wait: Some(wait) }) = first else {
        return Ok(first);
    };
    if wait > MAX_WAIT || wait >= prober.time_left() {
        return Ok(first);
    }
    evidence.push(format!(
        "waited {:.1} s as Retry-After asked, then retried the burst of {size}",
        wait.as_secs_f64()
    ));
    tokio::time::sleep(wait).await;
    one_burst(prober, size, evidence).await
}

/// The longest `Retry-After` waited out during the concurrency search.
const MAX_WAIT: Duration = Duration::from_secs(10);

async fn one_burst(prober: &mut Prober, size: u32, evidence: &mut Log) -> Result<Option<Burst>, DetectError> {
    let probes = match prober.burst(size).await {
        Ok(probes) => probes,
        Err(DetectError::BudgetSpent) => {
            evidence.push(format!(
                "stopped before a burst of {size}: the request budget would be exceeded"
            ));
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let limited = count(&probes, Answer::RateLimited);
    let overloaded = count(&probes, Answer::Overloaded);
    if limited > 0 && overloaded == 0 {
        evidence.push(format!("a burst of {size} met the rate limit ({limited} × 429)"));
        let wait = probes
            .iter()
            .filter(|p| p.answer == Answer::RateLimited)
            .filter_map(|p| crate::outcome::retry_after(&p.headers))
            .max();
        return Ok(Some(Burst::RateLimited { wait }));
    }
    if overloaded > 0 {
        return Ok(Some(Burst::Overflowed {
            accepted: count(&probes, Answer::Accepted),
        }));
    }
    Ok(Some(Burst::Passed))
}

fn stopped(passed: u32, overflowed: Option<u32>, evidence: &mut Log) -> ConcurrencyFinding {
    evidence.push(format!(
        "concurrency: at least {passed} (the largest burst that passed)"
    ));
    ConcurrencyFinding {
        passed,
        overflowed,
        finding: if overflowed.is_some() {
            Finding::Bracketed
        } else {
            Finding::AtLeast
        },
    }
}
