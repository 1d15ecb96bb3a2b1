//! Rate limiting with GCRA (the generic cell rate algorithm): one timestamp per limiter.
//!
//! Why our own and not `governor`: the engine changes quotas at run time (learned from
//! headers, adaptive), pauses a key until a Retry-After has passed, refunds a grant when a claim
//! came back empty, and will keep the same one timestamp in a database row when limits are
//! shared across processes. `governor` fits a fixed in-process quota; GCRA itself is ten lines.
//!
//! The guarantee: never more than `count` grants in any window of length `period`. With the
//! default `burst` of 1, grants are evenly paced `period / count` apart with no initial burst.
//! A burst of `b` lets `b` grants go back to back, and to keep the guarantee the sustained pace
//! becomes `period / (count - b + 1)`.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// `count` per `period`, at most `burst` back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub count: u32,
    #[serde(rename = "period_ms", with = "crate::time::serde_ms")]
    pub period: Duration,
    pub burst: u32,
}

impl Quota {
    /// `count` per `period`, evenly paced.
    pub fn new(count: u32, period: Duration) -> Result<Self> {
        let quota = Quota {
            count,
            period,
            burst: 1,
        };
        quota.validate()?;
        Ok(quota)
    }

    /// `count` per second.
    pub fn per_second(count: u32) -> Result<Self> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` per minute.
    pub fn per_minute(count: u32) -> Result<Self> {
        Self::new(count, Duration::from_secs(60))
    }

    /// Allows `burst` grants back to back (see the module docs for the cost).
    pub fn with_burst(mut self, burst: u32) -> Result<Self> {
        self.burst = burst;
        self.validate()?;
        Ok(self)
    }

    /// Checks the fields, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(Error::invalid("rate count", "must be at least 1 per period"));
        }
        if self.period.is_zero() {
            return Err(Error::invalid("rate period", "must be longer than zero"));
        }
        if self.burst == 0 || self.burst > self.count {
            return Err(Error::invalid(
                "rate burst",
                format!("must be between 1 and the count ({})", self.count),
            ));
        }
        Ok(())
    }

    /// The same guarantee with enough burst for a timer that wakes in steps of `tick`: an
    /// evenly paced schedule needs sleeps finer than the timer has, and a late wake-up would
    /// restart it, so each call would cost a whole tick. Changes nothing for slow quotas.
    pub fn for_timer(self, tick: Duration) -> Self {
        if self.interval() >= tick * 10 {
            // A late wake-up costs at most a tenth of an interval: stay evenly paced.
            return self;
        }
        let steps_per_tick = (tick.as_secs_f64() / self.interval().as_secs_f64()).ceil() as u32;
        // A burst of b lowers the sustained rate by (b-1)/count: keep that within 2%.
        let burst = (steps_per_tick * 2).min(self.count / 50 + 1).max(self.burst);
        Quota { burst, ..self }
    }

    /// Time between grants at the sustained pace.
    pub fn interval(&self) -> Duration {
        self.period / (self.count - self.burst + 1)
    }

    fn tolerance(&self) -> Duration {
        self.interval() * (self.burst - 1)
    }
}

/// `100/s`, `6000/min`, `90000/min`, `5/10s`, `20/500ms`, `1000/h`: a count per period.
impl std::str::FromStr for Quota {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::invalid("quota", reason);
        let (count, period) = text.split_once('/').ok_or_else(|| {
            bad(format!(
                "`{text}` is not COUNT/PERIOD, e.g. 100/s, 600/min, 5/10s"
            ))
        })?;
        let count: u32 = count
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| bad(format!("`{count}` in `{text}` is not a whole number")))?;
        let period = parse_period(period.trim()).ok_or_else(|| {
            bad(format!(
                "`{period}` in `{text}` is not a period (ms, s, min, h, or e.g. 10s)"
            ))
        })?;
        Quota::new(count, period)
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.period.as_millis();
        match ms {
            1_000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/min", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            ms if ms % 1_000 == 0 => write!(f, "{}/{}s", self.count, ms / 1_000),
            ms => write!(f, "{}/{ms}ms", self.count),
        }
    }
}

/// `s`, `min`, `10s`, `500ms`, `2m`, `h`.
fn parse_period(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = if number.is_empty() {
        1.0
    } else {
        number.parse().ok()?
    };
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "s" | "sec" | "second" | "seconds" => 1.0,
        "m" | "min" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3_600.0,
        "d" | "day" => 86_400.0,
        _ => return None,
    };
    let secs = number * unit_secs;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The GCRA state: the theoretical arrival time of the next grant.
#[derive(Debug)]
pub struct Gcra {
    quota: Quota,
    tat: Option<Instant>,
    paused_until: Option<Instant>,
    last_grant: u64,
}

/// Proof of one grant, for [`Gcra::refund`].
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    seq: u64,
    previous_tat: Option<Instant>,
}

impl Gcra {
    /// A limiter with `quota` and no history.
    pub fn new(quota: Quota) -> Self {
        Gcra {
            quota,
            tat: None,
            paused_until: None,
            last_grant: 0,
        }
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The earliest instant the next grant is allowed (`now` if allowed now).
    pub fn ready_at(&self, now: Instant) -> Instant {
        let mut at = now;
        if let Some(tat) = self.tat {
            let earliest = tat.checked_sub(self.quota.tolerance()).unwrap_or(tat);
            at = at.max(earliest);
        }
        if let Some(paused) = self.paused_until {
            at = at.max(paused);
        }
        at
    }

    /// Takes one grant at `now`, or says when to come back.
    pub fn try_take(&mut self, now: Instant) -> std::result::Result<Grant, Instant> {
        self.try_take_weighted(now, 1)
    }

    /// Takes a grant worth `weight` cells (weights for budgets such as tokens per minute).
    pub fn try_take_weighted(&mut self, now: Instant, weight: u64) -> std::result::Result<Grant, Instant> {
        let ready = self.ready_at(now);
        if ready > now {
            return Err(ready);
        }
        let previous_tat = self.tat;
        self.charge(now, weight);
        self.last_grant += 1;
        Ok(Grant {
            seq: self.last_grant,
            previous_tat,
        })
    }

    /// Takes the next grant if it comes due by `by`, charged at its due time (so reserving a
    /// grant ahead costs exactly what taking it then would); otherwise says when it is due.
    pub fn try_reserve(&mut self, now: Instant, by: Instant) -> std::result::Result<Grant, Instant> {
        let due = self.ready_at(now);
        if due > by {
            return Err(due);
        }
        let previous_tat = self.tat;
        self.charge(due, 1);
        self.last_grant += 1;
        Ok(Grant {
            seq: self.last_grant,
            previous_tat,
        })
    }

    /// Moves the schedule by `weight` cells without checking (a cost learned after the fact).
    pub fn charge(&mut self, now: Instant, weight: u64) {
        let base = self.tat.map_or(now, |tat| tat.max(now));
        let step = self
            .quota
            .interval()
            .saturating_mul(u32::try_from(weight).unwrap_or(u32::MAX));
        self.tat = Some(base + step);
    }

    /// Gives back `weight` cells charged too much (a cost that turned out lower than estimated).
    pub fn credit(&mut self, now: Instant, weight: u64) {
        if let Some(tat) = self.tat {
            let step = self
                .quota
                .interval()
                .saturating_mul(u32::try_from(weight).unwrap_or(u32::MAX));
            self.tat = Some(tat.checked_sub(step).unwrap_or(now).max(now));
        }
    }

    /// Undoes `grant` if nothing was granted after it (the claim it paid for found no task).
    pub fn refund(&mut self, grant: Grant) {
        if grant.seq == self.last_grant {
            self.tat = grant.previous_tat;
        }
    }

    /// No grant before `until` (a Retry-After); never shortens an existing pause.
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Replaces the quota; the schedule already promised stands.
    pub fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
    }

    /// The most spent the schedule can be after any grants taken no later than `by`: a grant
    /// at `t` needs `tat - tolerance <= t` and moves `tat` one interval past `max(tat, t)`.
    pub fn spent_by(&self, by: Instant) -> Instant {
        let bound = by + self.quota.tolerance() + self.quota.interval();
        self.tat.map_or(bound, |tat| tat.max(bound))
    }

    /// Continues from a schedule spent up to `tat` (an earlier run's); never moves back.
    pub fn restore(&mut self, tat: Instant) {
        self.tat = Some(self.tat.map_or(tat, |current| current.max(tat)));
    }
}

/// A shareable, FIFO-fair async rate limiter over [`Gcra`].
#[derive(Debug)]
pub struct RateLimiter {
    gcra: Mutex<Gcra>,
    // Waiters queue here one behind the other (tokio's mutex is fair), so a refill wakes exactly
    // one of them instead of a thundering herd.
    turn: tokio::sync::Mutex<()>,
}

impl RateLimiter {
    /// A limiter enforcing `quota`.
    pub fn new(quota: Quota) -> Self {
        RateLimiter {
            gcra: Mutex::new(Gcra::new(quota)),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for a grant, in arrival order.
    pub async fn acquire(&self) -> Grant {
        let _turn = self.turn.lock().await;
        loop {
            let next = match self.with(|g| g.try_take(Instant::now())) {
                Ok(grant) => return grant,
                Err(at) => at,
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// A grant now, or `None`.
    pub fn try_acquire(&self) -> Option<Grant> {
        self.with(|g| g.try_take(Instant::now())).ok()
    }

    /// The next grant if it comes due by `by` (a reservation for a call that will wait for its
    /// turn elsewhere), charged at its due time; or `None`.
    pub fn try_acquire_by(&self, now: Instant, by: Instant) -> Option<Grant> {
        self.with(|g| g.try_reserve(now, by)).ok()
    }

    /// When the next grant would be allowed, judged at `now` (`now` itself if allowed).
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.with(|g| g.ready_at(now))
    }

    /// See [`Gcra::refund`].
    pub fn refund(&self, grant: Grant) {
        self.with(|g| g.refund(grant));
    }

    /// See [`Gcra::pause_until`].
    pub fn pause_until(&self, until: Instant) {
        self.with(|g| g.pause_until(until));
    }

    /// See [`Gcra::set_quota`].
    pub fn set_quota(&self, quota: Quota) {
        self.with(|g| g.set_quota(quota));
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.with(|g| g.quota())
    }

    /// See [`Gcra::spent_by`].
    pub fn spent_by(&self, by: Instant) -> Instant {
        self.with(|g| g.spent_by(by))
    }

    /// See [`Gcra::restore`].
    pub fn restore(&self, tat: Instant) {
        self.with(|g| g.restore(tat));
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Gcra) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut guard = self.gcra.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_from_what_people_write() {
        let q = |text: &str| text.parse::<Quota>();
        assert_eq!(q("100/s").unwrap(), Quota::per_second(100).unwrap());
        assert_eq!(q("6_000/min").unwrap(), Quota::per_minute(6_000).unwrap());
        assert_eq!(q("5/10s").unwrap().period, Duration::from_secs(10));
        assert_eq!(q("20 / 500ms").unwrap().period, Duration::from_millis(500));
        assert_eq!(q("1000/h").unwrap().to_string(), "1000/h");
        assert_eq!(q("5/10s").unwrap().to_string(), "5/10s");
        for bad in ["100", "x/s", "100/fortnight", "0/s", "10/0s", "-1/s"] {
            assert!(q(bad).is_err(), "{bad} should not parse");
        }
    }

    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        times
            .iter()
            .map(|&start| {
                times
                    .iter()
                    .filter(|&&t| t >= start && t < start + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn evenly_paced_without_initial_burst() {
        let quota = Quota::per_second(5).unwrap();
        let mut g = Gcra::new(quota);
        let t0 = Instant::now();
        assert!(g.try_take(t0).is_ok());
        let next = g.try_take(t0).unwrap_err();
        assert_eq!(next - t0, Duration::from_millis(200));
    }

    #[test]
    fn never_more_than_count_in_any_window_when_greedy() {
        for burst in [1, 3, 10] {
            let quota = Quota::new(10, Duration::from_millis(1000))
                .unwrap()
                .with_burst(burst)
                .unwrap();
            let mut g = Gcra::new(quota);
            let t0 = Instant::now();
            let mut grants = Vec::new();
            let mut now = t0;
            // A greedy client taking all it can, every millisecond, for five seconds.
            while now < t0 + Duration::from_secs(5) {
                while g.try_take(now).is_ok() {
                    grants.push(now);
                }
                now += Duration::from_millis(1);
            }
            assert!(max_in_window(&grants, quota.period) <= 10, "burst {burst}");
            let first_burst = grants.iter().take_while(|&&t| t == t0).count();
            assert_eq!(first_burst, burst as usize, "burst {burst} goes back to back");
        }
    }

    #[test]
    fn refund_only_undoes_the_latest_grant() {
        let mut g = Gcra::new(Quota::per_second(1).unwrap());
        let t0 = Instant::now();
        let a = g.try_take(t0).unwrap();
        g.refund(a);
        let b = g.try_take(t0).expect("refunded grant is available again");
        let later = t0 + Duration::from_secs(1);
        let _c = g.try_take(later).unwrap();
        g.refund(b); // stale: a grant happened after b
        assert!(g.try_take(later).is_err());
    }

    #[test]
    fn timer_burst_only_for_fast_quotas_and_the_window_still_holds() {
        let tick = Duration::from_millis(1);
        assert_eq!(Quota::per_second(10).unwrap().for_timer(tick).burst, 1);
        assert_eq!(Quota::per_minute(600).unwrap().for_timer(tick).burst, 1);
        let fast = Quota::per_second(2000).unwrap().for_timer(tick);
        assert_eq!(fast.burst, 4);
        let mut g = Gcra::new(fast);
        let t0 = Instant::now();
        let mut grants = Vec::new();
        let mut now = t0;
        // Wake-ups only on whole milliseconds, late by up to one tick.
        while now < t0 + Duration::from_secs(3) {
            while g.try_take(now).is_ok() {
                grants.push(now);
            }
            now += tick;
        }
        assert!(max_in_window(&grants, fast.period) <= 2000);
        assert!(
            grants.len() >= 5900,
            "keeps pace on a 1 ms timer: {}",
            grants.len()
        );
    }

    #[test]
    fn reserving_ahead_costs_what_taking_later_would() {
        let mut g = Gcra::new(Quota::per_second(100).unwrap());
        let t0 = Instant::now();
        let by = t0 + Duration::from_millis(45);
        let mut n = 0;
        while g.try_reserve(t0, by).is_ok() {
            n += 1;
        }
        // Due at 0, 10, 20, 30 and 40 ms; the sixth would be due at 50 ms.
        assert_eq!(n, 5);
        assert_eq!(g.ready_at(t0), t0 + Duration::from_millis(50));
    }

    #[test]
    fn pause_blocks_until_its_end_and_never_shrinks() {
        let mut g = Gcra::new(Quota::per_second(100).unwrap());
        let t0 = Instant::now();
        g.pause_until(t0 + Duration::from_secs(3));
        g.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(g.try_take(t0).unwrap_err(), t0 + Duration::from_secs(3));
        assert!(g.try_take(t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn weighted_grants_consume_proportionally() {
        let mut g = Gcra::new(Quota::new(1000, Duration::from_secs(60)).unwrap());
        let t0 = Instant::now();
        g.try_take_weighted(t0, 500).unwrap();
        // 500 of 1000 tokens per minute: the next grant waits 30 s.
        assert_eq!(g.try_take(t0).unwrap_err() - t0, Duration::from_secs(30));
        g.credit(t0, 250);
        assert_eq!(g.try_take(t0).unwrap_err() - t0, Duration::from_secs(15));
    }

    #[test]
    fn a_schedule_restored_from_its_bound_holds_the_window_across_a_restart() {
        for burst in [1, 4] {
            let quota = Quota::new(10, Duration::from_secs(1))
                .unwrap()
                .with_burst(burst)
                .unwrap();
            let t0 = Instant::now();
            let kill = t0 + Duration::from_millis(1_234);
            // A greedy run until the kill, bounded beforehand as a claim bounds it.
            let mut run = Gcra::new(quota);
            let bound = run.spent_by(kill);
            let (mut grants, mut now) = (Vec::new(), t0);
            while now <= kill {
                while run.try_take(now).is_ok() {
                    grants.push(now);
                }
                now += Duration::from_millis(1);
            }
            // Its successor starts at the kill, from the bound, and is greedy too.
            let mut next = Gcra::new(quota);
            next.restore(bound);
            let mut now = kill;
            while now < kill + Duration::from_secs(3) {
                while next.try_take(now).is_ok() {
                    grants.push(now);
                }
                now += Duration::from_millis(1);
            }
            assert!(max_in_window(&grants, quota.period) <= 10, "burst {burst}");
            // A fresh limiter would not have held it.
            let mut fresh = Gcra::new(quota);
            assert!(fresh.try_take(kill).is_ok() && run.try_take(kill).is_err());
        }
    }

    #[test]
    fn bad_quotas_name_their_field() {
        assert!(
            Quota::per_second(0)
                .unwrap_err()
                .to_string()
                .contains("rate count")
        );
        assert!(
            Quota::new(1, Duration::ZERO)
                .unwrap_err()
                .to_string()
                .contains("rate period")
        );
        let err = Quota::per_second(5).unwrap().with_burst(6).unwrap_err();
        assert!(err.to_string().contains("burst"));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_at_the_quota() {
        let limiter = std::sync::Arc::new(RateLimiter::new(Quota::per_second(10).unwrap()));
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for i in 0..20u32 {
            let limiter = limiter.clone();
            handles.push(tokio::spawn(async move {
                limiter.acquire().await;
                (i, Instant::now())
            }));
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        for h in handles {
            got.push(h.await.unwrap());
        }
        let times: Vec<Instant> = got.iter().map(|(_, t)| *t).collect();
        assert!(max_in_window(&times, Duration::from_secs(1)) <= 10);
        assert_eq!(*times.last().unwrap() - t0, Duration::from_millis(1900));
        assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "FIFO order");
    }
}
