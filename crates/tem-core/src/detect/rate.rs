//! Measuring a rate limit the API does not state: pace requests at doubling rates until 429s
//! start, then keep pacing above the limit and count what gets through.
//!
//! Above the limit, answers come in runs: accepted, then refused until the quota refills (a
//! token every 1/rate for a token bucket; a whole window's quota at each window start for fixed
//! and sliding windows). Timing from response arrivals, the accepted requests between the start
//! of the first run after the first 429 and the start of the last run, divided by the time
//! between those starts, is the rate the limiter lets through — whatever its algorithm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::probe::{Answer, Probe, Prober};
use super::{DetectError, Finding, Log};

/// How long each pacing level lasts.
const LEVEL: Duration = Duration::from_secs(1);
/// How long to keep pacing once 429s started, to see the quota refill more than once (two
/// refills of a one-second window, with room for the first run's phase).
const MEASURE: Duration = Duration::from_millis(2_200);
/// The measuring pace, relative to the pace that first met 429s: faster pacing marks each
/// refill more precisely (a run's start is seen at most one gap after it happens).
const MEASURE_PACE: f64 = 2.0;
/// The first pacing rate, per second.
const FIRST_RATE: f64 = 2.0;

/// What the rate search learned: `requests` per `window_ms`. A lower bound (`AtLeast`) is what
/// was seen to pass in the time it was watched ("at least 300 within 3.6 s"), never stretched
/// into a sustained rate, which a long window (600/min) would make false.
#[derive(Clone, Debug, PartialEq)]
pub struct RateFinding {
    pub requests: u64,
    pub window_ms: u64,
    pub finding: Finding,
}

impl RateFinding {
    fn per_second(rate: f64, finding: Finding) -> RateFinding {
        RateFinding {
            requests: rate.round().max(1.0) as u64,
            window_ms: 1000,
            finding,
        }
    }
}

pub async fn search(
    prober: &mut Prober,
    in_flight: u32,
    evidence: &mut Log,
) -> Result<Option<RateFinding>, DetectError> {
    let mut rate = FIRST_RATE;
    let mut clean_rate = None;
    let mut accepted_arrivals: Vec<Instant> = Vec::new();
    loop {
        let level = pace(prober, rate, LEVEL, in_flight).await?;
        if !refuses_after_accepting(&level.probes) {
            accepted_arrivals.extend(
                level
                    .probes
                    .iter()
                    .filter(|p| p.answer == Answer::Accepted)
                    .map(|p| p.arrived),
            );
            if level.cut_short {
                return Ok(lower_bound(&accepted_arrivals, rate, evidence));
            }
            clean_rate = Some(rate);
            rate *= 2.0;
            continue;
        }
        evidence.push(format!("429s started while pacing at {rate:.0}/s"));
        let more = pace(prober, rate * MEASURE_PACE, MEASURE, in_flight).await?;
        let mut probes = level.probes;
        probes.extend(more.probes);
        return Ok(Some(match through_rate(&probes) {
            Some((per_second, accepted, span)) => {
                evidence.push(format!(
                    "above the limit, {accepted} requests got through in {:.2} s: {per_second:.1}/s",
                    span.as_secs_f64()
                ));
                RateFinding::per_second(per_second, Finding::Exact)
            }
            None => {
                let floor = clean_rate.unwrap_or(rate / 2.0);
                evidence.push(format!(
                    "the quota did not refill twice within the budget: the limit is between {floor:.0}/s and {rate:.0}/s"
                ));
                RateFinding::per_second(floor, Finding::Bracketed)
            }
        }));
    }
}

/// Whether the limiter refused a request after accepting one at this pace: the pace is above
/// the limit. 429s before any acceptance only show a quota still empty from earlier probing.
fn refuses_after_accepting(probes: &[Probe]) -> bool {
    probes
        .iter()
        .skip_while(|p| p.answer != Answer::Accepted)
        .any(|p| p.answer == Answer::RateLimited)
}

/// What a search the budget ended before any 429 can truthfully say.
fn lower_bound(accepted: &[Instant], rate: f64, evidence: &mut Log) -> Option<RateFinding> {
    let (Some(first), Some(last)) = (accepted.first(), accepted.last()) else {
        evidence.push("the budget ended the rate search before it began".into());
        return None;
    };
    let window_ms = (last.duration_since(*first).as_millis() as u64).max(1);
    let requests = accepted.len() as u64;
    evidence.push(format!(
        "no 429 while pacing up to {rate:.0}/s: at least {requests} requests pass within {:.1} s; the budget ended the search first",
        window_ms as f64 / 1000.0
    ));
    Some(RateFinding {
        requests,
        window_ms,
        finding: Finding::AtLeast,
    })
}

struct Level {
    probes: Vec<Probe>,
    /// The budget (requests or time) ran out before the level's end.
    cut_short: bool,
}

/// Sends requests evenly spaced at `rate`/s for `duration`, at most `in_flight` at once.
async fn pace(
    prober: &mut Prober,
    rate: f64,
    duration: Duration,
    in_flight: u32,
) -> Result<Level, DetectError> {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let slots = Arc::new(Semaphore::new(in_flight.max(1) as usize));
    let started = Instant::now();
    let mut sends = Vec::new();
    let mut cut_short = false;
    let mut next = started;
    while next < started + duration {
        if prober.time_left().is_zero() || !prober.reserve() {
            cut_short = true;
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DetectError::Client("pacing stopped".into()))?;
        let send = prober.send_reserved();
        sends.push(tokio::spawn(async move {
            let probe = send.await;
            drop(permit);
            probe
        }));
        next += gap;
    }
    let mut probes = Vec::with_capacity(sends.len());
    for send in sends {
        probes.push(
            send.await
                .map_err(|error| DetectError::Client(error.to_string()))??,
        );
    }
    probes.sort_by_key(|p| p.arrived);
    Ok(Level { probes, cut_short })
}

/// The accepted rate once refusals began: requests accepted from the first run start after the
/// first 429 up to (not including) the last run start, over the time between them.
fn through_rate(probes: &[Probe]) -> Option<(f64, u32, Duration)> {
    let first_refusal = probes.iter().position(|p| p.answer == Answer::RateLimited)?;
    let mut run_starts = Vec::new();
    let mut previous_refused = true;
    for (index, probe) in probes.iter().enumerate().skip(first_refusal) {
        match probe.answer {
            Answer::Accepted => {
                if previous_refused {
                    run_starts.push(index);
                }
                previous_refused = false;
            }
            Answer::RateLimited => previous_refused = true,
            _ => {}
        }
    }
    let (&first, &last) = (run_starts.first()?, run_starts.last()?);
    if run_starts.len() < 2 {
        return None;
    }
    let accepted = probes[first..last]
        .iter()
        .filter(|p| p.answer == Answer::Accepted)
        .count() as u32;
    let span = probes[last].arrived.duration_since(probes[first].arrived);
    (span > Duration::ZERO).then(|| (f64::from(accepted) / span.as_secs_f64(), accepted, span))
}
