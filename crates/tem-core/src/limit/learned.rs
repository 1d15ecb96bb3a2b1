//! Limits learned from the answers: what a key's provider says, on every response, of each quota
//! (requests, tokens, input and output tokens) — its size, what is left, when it is whole again —
//! turned into a gate that lets a call start only while every quota it counts against has room.
//!
//! The model is the one both kinds of provider limiter satisfy (a refilling bucket and a sliding
//! window): what was left at an answer stays available at least until the reset it named, and
//! at the reset the whole quota is. So a meter's room at `now` is what the latest answer said was
//! left (the whole quota once its reset has passed), less every call started after the call that
//! answered — those the provider had not counted yet — and less the calls started before it that
//! were still unanswered (they may or may not have been counted: assume they were not). Nothing
//! about the window's length is guessed, so the gate never lets through more than the provider
//! said it would take; it refills in steps, at each answer and at each reset.
//!
//! Until the first answer nothing is known: one call at a time (the cautious start). An answer
//! without limit headers ends the cautious start with nothing learned, and the key is paced by
//! whatever else limits it (flags, 429s and their Retry-After).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::headers::{Meter, RateLimitHeaders};

/// What one call counts against each meter (requests: 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    amounts: [u64; 4],
}

impl Default for Demand {
    fn default() -> Self {
        Demand::request()
    }
}

impl Demand {
    /// One request, no tokens.
    pub fn request() -> Self {
        let mut amounts = [0; 4];
        amounts[Meter::Requests.index()] = 1;
        Demand { amounts }
    }

    /// Sets what the call counts against `meter`.
    pub fn with(mut self, meter: Meter, amount: u64) -> Self {
        self.amounts[meter.index()] = amount;
        self
    }

    /// What the call counts against `meter`.
    pub fn get(&self, meter: Meter) -> u64 {
        self.amounts[meter.index()]
    }

    fn max(self, other: Demand) -> Demand {
        let mut amounts = self.amounts;
        for (a, b) in amounts.iter_mut().zip(other.amounts) {
            *a = (*a).max(b);
        }
        Demand { amounts }
    }
}

/// A call let through the gate, for [`LearnedLimits::answered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// One meter's quota as last learned, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LearnedLimit {
    pub meter: Meter,
    /// The quota the provider stated.
    pub limit: u64,
    /// The longest time from a call to its quota being whole again (≈ the provider's window).
    #[serde(with = "crate::time::serde_ms", rename = "window_ms")]
    pub window: Duration,
    /// When it was last heard (ms since the epoch).
    pub learned_at: i64,
}

#[derive(Debug)]
struct Sent {
    id: u64,
    demand: Demand,
    answered: bool,
}

/// What the latest answer said of one meter.
#[derive(Debug)]
struct Quota {
    limit: u64,
    /// Left at the answer, less calls started before it and still unanswered then.
    remaining: u64,
    /// The call that answered: later ones are not in `remaining`.
    basis: u64,
    reset_at: Instant,
    window: Duration,
    heard_at: crate::time::Millis,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Calls that may not be in the latest answer yet, oldest first.
    sent: VecDeque<Sent>,
    quotas: [Option<Quota>; 4],
    /// Any answer at all came back: the cautious start is over.
    heard: bool,
    /// The largest demand seen, what the next call is assumed to need.
    typical: Demand,
    /// Calls waiting at the gate.
    waiting: u64,
}

/// When a call may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// Now.
    Now,
    /// Not before this instant (a reset).
    At(Instant),
    /// Only once an answer brings news.
    WhenAnswered,
}

/// A key's learned limits: the gate calls pass and the answers that teach it.
#[derive(Debug, Default)]
pub struct LearnedLimits {
    state: Mutex<State>,
    /// Waiters pass in arrival order.
    turn: tokio::sync::Mutex<()>,
    news: Notify,
}

impl LearnedLimits {
    /// Nothing learned yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until `demand` fits every learned quota, then counts it as started.
    pub async fn acquire(&self, demand: Demand) -> Ticket {
        self.with(|s| s.waiting += 1);
        let _turn = self.turn.lock().await;
        loop {
            let news = self.news.notified();
            tokio::pin!(news);
            news.as_mut().enable();
            let now = Instant::now();
            let room = self.with(|s| {
                let room = s.room(demand, now);
                if room == Room::Now {
                    s.waiting -= 1;
                }
                room
            });
            match room {
                Room::Now => return self.with(|s| s.start(demand)),
                Room::At(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut news => {}
                    }
                }
                Room::WhenAnswered => {
                    // A lost answer must not stall the key for good: look again now and then.
                    tokio::select! {
                        () = tokio::time::sleep(STALL_CHECK) => self.with(State::forget_stale),
                        () = &mut news => {}
                    }
                }
            }
        }
    }

    /// Whether another call (of the typical demand) could start now, counting those already
    /// waiting: the worker claims only then.
    pub fn room(&self, now: Instant) -> Room {
        self.with(|s| {
            if s.waiting > 0 {
                return Room::WhenAnswered;
            }
            s.room(s.typical, now)
        })
    }

    /// The call behind `ticket` ended; `headers` is what its answer said of limits (`None`: no
    /// answer came), `actual` what it really counted where that differs from its demand.
    pub fn answered(
        &self,
        ticket: Ticket,
        headers: Option<&RateLimitHeaders>,
        actual: Option<Demand>,
        now: Instant,
    ) {
        self.with(|s| s.answered(ticket, headers, actual, now));
        self.news.notify_waiters();
    }

    /// What is known, meter by meter.
    pub fn learned(&self) -> Vec<LearnedLimit> {
        self.with(|s| {
            Meter::ALL
                .iter()
                .filter_map(|&meter| {
                    let q = s.quotas[meter.index()].as_ref()?;
                    Some(LearnedLimit {
                        meter,
                        limit: q.limit,
                        window: q.window,
                        learned_at: q.heard_at,
                    })
                })
                .collect()
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

/// How often a gate waiting for news checks whether its news is stale.
const STALL_CHECK: Duration = Duration::from_secs(1);

impl State {
    fn room(&self, demand: Demand, now: Instant) -> Room {
        if !self.heard {
            return if self.sent.is_empty() {
                Room::Now
            } else {
                Room::WhenAnswered
            };
        }
        let mut room = Room::Now;
        for meter in Meter::ALL {
            let Some(quota) = &self.quotas[meter.index()] else {
                continue;
            };
            let want = demand.get(meter);
            if want > quota.limit {
                // It can never fit; the provider will say so, not a gate that waits forever.
                continue;
            }
            let pending: u64 = self
                .sent
                .iter()
                .filter(|s| s.id > quota.basis)
                .map(|s| s.demand.get(meter))
                .sum();
            let fits = |left: u64| left.saturating_sub(pending) >= want;
            if now < quota.reset_at && !fits(quota.remaining) {
                if fits(quota.limit) {
                    room = later(room, Room::At(quota.reset_at));
                } else {
                    return Room::WhenAnswered;
                }
            } else if now >= quota.reset_at && !fits(quota.limit) {
                return Room::WhenAnswered;
            }
        }
        room
    }

    fn start(&mut self, demand: Demand) -> Ticket {
        self.next_id += 1;
        self.typical = self.typical.max(demand);
        self.sent.push_back(Sent {
            id: self.next_id,
            demand,
            answered: false,
        });
        Ticket(self.next_id)
    }

    fn answered(
        &mut self,
        ticket: Ticket,
        headers: Option<&RateLimitHeaders>,
        actual: Option<Demand>,
        now: Instant,
    ) {
        self.heard = true;
        let Ticket(id) = ticket;
        if let Some(sent) = self.sent.iter_mut().find(|s| s.id == id) {
            sent.answered = true;
            if let Some(actual) = actual {
                sent.demand = actual;
            }
        }
        if let Some(headers) = headers {
            for meter in Meter::ALL {
                let Some(reading) = headers.get(meter) else {
                    continue;
                };
                let (Some(limit), Some(remaining), Some(reset)) =
                    (reading.limit, reading.remaining, reading.reset)
                else {
                    continue;
                };
                let slot = &mut self.quotas[meter.index()];
                let window = slot.as_ref().map_or(reset, |q| q.window.max(reset));
                if slot.as_ref().is_some_and(|q| q.basis > id) {
                    // Older news than what we hold: only the quota's size may have changed.
                    if let Some(q) = slot.as_mut() {
                        q.limit = limit;
                        q.window = window;
                    }
                    continue;
                }
                let unanswered: u64 = self
                    .sent
                    .iter()
                    .filter(|s| s.id < id && !s.answered)
                    .map(|s| s.demand.get(meter))
                    .sum();
                *slot = Some(Quota {
                    limit,
                    remaining: remaining.min(limit).saturating_sub(unanswered),
                    basis: id,
                    reset_at: now + reset,
                    window,
                    heard_at: crate::time::now_ms(),
                });
            }
        }
        self.prune();
    }

    /// Drops calls every quota has counted (answered, and at or before every basis).
    fn prune(&mut self) {
        let oldest_basis = self
            .quotas
            .iter()
            .flatten()
            .map(|q| q.basis)
            .min()
            .unwrap_or(u64::MAX);
        while let Some(front) = self.sent.front() {
            if front.answered && front.id <= oldest_basis {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        // Nothing learned: keep only what the cautious start needs to know.
        if self.quotas.iter().all(Option::is_none) {
            self.sent.retain(|s| !s.answered);
        }
    }

    /// A quota whose news is older than its reset by a whole window (no answer brought any
    /// since: the headers stopped coming) is forgotten rather than trusted forever.
    fn forget_stale(&mut self) {
        let now = Instant::now();
        for slot in &mut self.quotas {
            if slot
                .as_ref()
                .is_some_and(|q| now > q.reset_at + q.window.max(STALL_CHECK))
            {
                *slot = None;
            }
        }
        self.prune();
    }
}

/// The later of two rooms.
fn later(a: Room, b: Room) -> Room {
    match (a, b) {
        (Room::WhenAnswered, _) | (_, Room::WhenAnswered) => Room::WhenAnswered,
        (Room::Now, other) | (other, Room::Now) => other,
        (Room::At(x), Room::At(y)) => Room::At(x.max(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::headers::Reading;

    fn said(meter: Meter, limit: u64, remaining: u64, reset_ms: u64) -> RateLimitHeaders {
        let mut h = RateLimitHeaders::default();
        h.set(
            meter,
            Reading {
                limit: Some(limit),
                remaining: Some(remaining),
                reset: Some(Duration::from_millis(reset_ms)),
                window: None,
            },
        );
        h
    }

    #[tokio::test(start_paused = true)]
    async fn one_call_at_a_time_until_the_first_answer() {
        let gate = LearnedLimits::new();
        let now = Instant::now();
        assert_eq!(gate.room(now), Room::Now);
        let first = gate.acquire(Demand::request()).await;
        assert_eq!(gate.room(now), Room::WhenAnswered);
        gate.answered(first, Some(&said(Meter::Requests, 3, 2, 1000)), None, now);
        assert_eq!(gate.room(now), Room::Now);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_without_headers_ends_the_cautious_start_with_nothing_learned() {
        let gate = LearnedLimits::new();
        let t = gate.acquire(Demand::request()).await;
        gate.answered(t, Some(&RateLimitHeaders::default()), None, Instant::now());
        for _ in 0..100 {
            gate.acquire(Demand::request()).await;
        }
        assert!(gate.learned().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_remaining_until_the_reset_then_the_whole_quota() {
        let gate = LearnedLimits::new();
        let t0 = Instant::now();
        let first = gate.acquire(Demand::request()).await;
        gate.answered(first, Some(&said(Meter::Requests, 5, 2, 1000)), None, t0);
        // Two left: two start, the third waits for the reset.
        gate.acquire(Demand::request()).await;
        gate.acquire(Demand::request()).await;
        assert_eq!(gate.room(t0), Room::At(t0 + Duration::from_secs(1)));
        let third = gate.acquire(Demand::request()).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        // After the reset: the whole quota, less the three started since the answer.
        gate.acquire(Demand::request()).await;
        gate.acquire(Demand::request()).await;
        assert_eq!(gate.room(Instant::now()), Room::WhenAnswered);
        // The third's answer: 2 left of the window it counted in.
        gate.answered(
            third,
            Some(&said(Meter::Requests, 5, 2, 1000)),
            None,
            Instant::now(),
        );
        // Two started after it: none left until its reset.
        assert_eq!(
            gate.room(Instant::now()),
            Room::At(Instant::now() + Duration::from_secs(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_count_what_each_call_demands_and_corrections_apply() {
        let gate = LearnedLimits::new();
        let now = Instant::now();
        let big = Demand::request().with(Meter::Tokens, 400);
        let first = gate.acquire(big).await;
        gate.answered(first, Some(&said(Meter::Tokens, 1000, 600, 60_000)), None, now);
        let second = gate.acquire(big).await;
        // 200 left: a typical call (400) does not fit before the reset.
        assert_eq!(gate.room(now), Room::At(now + Duration::from_secs(60)));
        // It really counted 100: 500 left now.
        gate.answered(
            second,
            None,
            Some(Demand::request().with(Meter::Tokens, 100)),
            now,
        );
        let small = Demand::request().with(Meter::Tokens, 200);
        let third = gate.acquire(small).await;
        assert_eq!(Instant::now(), now, "fits without waiting");
        let _ = third;
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_earlier_calls_are_assumed_uncounted() {
        let gate = LearnedLimits::new();
        let now = Instant::now();
        let first = gate.acquire(Demand::request()).await;
        gate.answered(first, Some(&RateLimitHeaders::default()), None, now);
        let a = gate.acquire(Demand::request()).await;
        let b = gate.acquire(Demand::request()).await;
        // b answers first, saying 1 left; a may not be in that count.
        gate.answered(b, Some(&said(Meter::Requests, 10, 1, 5000)), None, now);
        assert_eq!(gate.room(now), Room::At(now + Duration::from_secs(5)));
        // a's late answer is older news: it changes nothing.
        gate.answered(a, Some(&said(Meter::Requests, 10, 8, 5000)), None, now);
        assert_eq!(gate.room(now), Room::At(now + Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_demand_larger_than_the_quota_is_let_through() {
        let gate = LearnedLimits::new();
        let now = Instant::now();
        let t = gate.acquire(Demand::request()).await;
        gate.answered(t, Some(&said(Meter::Tokens, 100, 100, 1000)), None, now);
        gate.acquire(Demand::request().with(Meter::Tokens, 5000)).await;
        assert_eq!(Instant::now(), now);
    }

    #[tokio::test(start_paused = true)]
    async fn news_that_stops_coming_is_forgotten() {
        let gate = LearnedLimits::new();
        let now = Instant::now();
        let t = gate.acquire(Demand::request()).await;
        gate.answered(t, Some(&said(Meter::Requests, 1, 0, 1000)), None, now);
        // Started, never answered: the gate would wait for news that never comes.
        gate.acquire(Demand::request()).await;
        let waited = tokio::time::timeout(Duration::from_secs(10), gate.acquire(Demand::request())).await;
        assert!(waited.is_ok(), "the stale quota was forgotten");
        assert!(gate.learned().is_empty());
    }
}
