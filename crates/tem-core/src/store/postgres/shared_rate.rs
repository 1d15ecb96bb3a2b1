//! Rate limits and weighted budgets shared by every process on the database: GCRA with its one
//! timestamp (the theoretical arrival time, TAT) in a `limit_rate` row, read and advanced inside
//! the claim's transaction (a budget's row is also corrected by the commit of each outcome whose
//! real cost differed from its estimate).
//!
//! A claim does not ask "may I call now?" per task: it takes a block of start slots, at most as
//! many as are due within a short lookahead, and each claimed task starts no earlier than its
//! slot. Slots are measured on the database's clock and handed to the worker as offsets from
//! "now", so machines whose clocks disagree still share one schedule. The trade-off: one row
//! lock and two statements per claim (not per task) buy an exact global schedule; a slot a
//! worker does not use (it crashed, or the claim found fewer tasks) is given back when the
//! claim commits, or lost when the worker dies after it, which only makes the pace slower.

use std::time::Duration;

use sqlx::{PgConnection, Row};

use crate::error::Result;
use crate::limit::Quota;

/// How far ahead one claim may take slots: enough that a fast quota is not capped by one claim
/// per commit, short enough that slots taken by a worker that then dies are few.
pub(super) const LOOKAHEAD: Duration = Duration::from_millis(50);

/// The slots one claim may use, on the database's clock (microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slots {
    now: i64,
    base: i64,
    interval: i64,
    tolerance: i64,
    /// How many slots are due within the lookahead (at most the number asked for).
    pub granted: u32,
}

impl Slots {
    /// GCRA over a block: slot `j` is at `max(now, base + j·interval − tolerance)`, and only
    /// slots within `lookahead` of `now` are granted.
    pub fn plan(tat: i64, now: i64, quota: Quota, want: u32, lookahead: Duration) -> Slots {
        let interval = interval_us(quota);
        let tolerance = interval.saturating_mul(i64::from(quota.burst) - 1);
        let horizon = now.saturating_add(i64::try_from(lookahead.as_micros()).unwrap_or(i64::MAX));
        let base = tat.max(now);
        let room = horizon + tolerance - base;
        let granted = if room < 0 {
            0
        } else {
            u32::try_from(room / interval + 1).unwrap_or(u32::MAX).min(want)
        };
        Slots {
            now,
            base,
            interval,
            tolerance,
            granted,
        }
    }

    /// How long after `now` slot `j` starts.
    pub fn offset(&self, j: u32) -> Duration {
        let at = self.base + i64::from(j) * self.interval - self.tolerance;
        Duration::from_micros(u64::try_from(at - self.now).unwrap_or(0))
    }

    /// The next slot's distance from `now` when none is granted.
    pub fn next_free_in(&self) -> Duration {
        self.offset(0)
    }

    /// The TAT after `used` slots were taken.
    pub fn tat_after(&self, used: u32) -> i64 {
        self.base + i64::from(used) * self.interval
    }
}

pub(super) use crate::store::limit_row as row_key;

/// Microseconds per unit of `quota` at its sustained pace.
pub(super) fn interval_us(quota: Quota) -> i64 {
    i64::try_from(quota.interval().as_micros())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Moves a weighted budget by `delta_us` (positive: spent more than estimated; negative: less),
/// never crediting it back past the present.
pub(super) async fn correct(conn: &mut PgConnection, key: &str, delta_us: i64) -> Result<()> {
    sqlx::query(
        // In numeric, clamped back into bigint: an absurd reported cost must not fail the commit.
        "UPDATE limit_rate SET tat_us = least(9000000000000000000, CASE \
                 WHEN $2 >= 0 THEN greatest(tat_us, n.now)::numeric + $2 \
                 ELSE greatest(tat_us::numeric + $2, n.now) END)::bigint \
         FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS now) AS n \
         WHERE key = $1",
    )
    .bind(key)
    .bind(delta_us)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks the key's row (creating it) and reads its TAT and the database's clock.
pub(super) async fn lock(conn: &mut PgConnection, key: &str) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "INSERT INTO limit_rate (key, tat_us) VALUES ($1, 0) \
         ON CONFLICT (key) DO UPDATE SET tat_us = limit_rate.tat_us \
         RETURNING tat_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Stores the TAT after a claim used some of its slots.
pub(super) async fn advance(conn: &mut PgConnection, key: &str, tat: i64) -> Result<()> {
    sqlx::query("UPDATE limit_rate SET tat_us = $2 WHERE key = $1")
        .bind(key)
        .bind(tat)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    #[test]
    fn an_idle_key_grants_what_the_lookahead_holds() {
        // 100/s = a slot every 10 ms; 50 ms ahead holds slots at 0, 10, 20, 30, 40, 50.
        let quota = Quota::per_second(100).unwrap();
        let slots = Slots::plan(0, 1_000 * MS, quota, 64, LOOKAHEAD);
        assert_eq!(slots.granted, 6);
        assert_eq!(slots.offset(0), Duration::ZERO);
        assert_eq!(slots.offset(3), Duration::from_millis(30));
        assert_eq!(slots.tat_after(6), 1_060 * MS);
    }

    #[test]
    fn a_busy_schedule_continues_where_it_stands() {
        let quota = Quota::per_second(100).unwrap();
        // The schedule is booked 30 ms ahead: the next slot is in 30 ms, two more fit.
        let slots = Slots::plan(1_030 * MS, 1_000 * MS, quota, 64, LOOKAHEAD);
        assert_eq!(slots.granted, 3);
        assert_eq!(slots.offset(0), Duration::from_millis(30));
        // Booked beyond the lookahead: nothing now, and when.
        let full = Slots::plan(1_080 * MS, 1_000 * MS, quota, 64, LOOKAHEAD);
        assert_eq!(full.granted, 0);
        assert_eq!(full.next_free_in(), Duration::from_millis(80));
    }

    #[test]
    fn a_burst_lets_slots_start_together() {
        let quota = Quota::per_second(100).unwrap().with_burst(5).unwrap();
        let slots = Slots::plan(0, 1_000 * MS, quota, 3, LOOKAHEAD);
        assert_eq!(slots.granted, 3, "never more than asked for");
        assert!((0..3).all(|j| slots.offset(j) == Duration::ZERO));
    }

    #[test]
    fn no_window_of_a_period_holds_more_than_the_count() {
        // Claims arriving every 7 ms over two seconds: starts never exceed 100 in any second.
        let quota = Quota::per_second(100).unwrap();
        let (mut tat, mut starts) = (0, Vec::new());
        for step in 0..300 {
            let now = 1_000 * MS + step * 7 * MS;
            let slots = Slots::plan(tat, now, quota, 8, LOOKAHEAD);
            starts.extend((0..slots.granted).map(|j| now + slots.offset(j).as_micros() as i64));
            tat = slots.tat_after(slots.granted);
        }
        starts.sort_unstable();
        let most = starts
            .iter()
            .map(|&s| starts.iter().filter(|&&t| t >= s && t < s + 1_000 * MS).count())
            .max()
            .unwrap();
        assert_eq!(most, 100);
    }
}
