//! Rate limits across restarts: a process keeps its limiters in memory, and every claim of a
//! rate-limited key writes how far they may have been spent (`limit_rate`, one GCRA timestamp
//! per batch and key, as on Postgres) in its own transaction, so it is durable before any of the
//! claim's calls starts. A run of the same batch and key resumes from it: however a run ended,
//! its successor starts at least as spent as any grant the run used.

use sqlx::Row;

use super::SqliteStore;
use super::program::{Program, Value};
use crate::error::Result;
use crate::store::SpentRate;

/// Adds the write of `spent` to a claim's program; a row never moves back.
pub(super) fn push(program: &mut Program, spent: &SpentRate) -> Result<usize> {
    program.push(
        "INSERT INTO limit_rate (key, tat_us) VALUES (?, ?) \
         ON CONFLICT (key) DO UPDATE SET tat_us = max(tat_us, excluded.tat_us)",
        &[Value::Text(spent.row.as_str().into()), Value::Int(spent.tat_us)],
    )
}

impl SqliteStore {
    /// How far the limit of `row` was spent by earlier runs (microseconds since the epoch).
    pub async fn spent_rate(&self, row: &str) -> Result<Option<i64>> {
        let found = sqlx::query("SELECT tat_us FROM limit_rate WHERE key = ?")
            .bind(row)
            .fetch_optional(&self.read)
            .await?;
        Ok(match found {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }
}
