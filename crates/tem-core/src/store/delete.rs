//! Deleting a batch: the rules every backend checks inside the transaction that deletes, and
//! the rows besides the cascade that must go with it. Each backend only writes the SQL.

use crate::batch::BatchId;
use crate::error::{Error, Result};

/// What deleting a batch removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Its tasks, whatever their status.
    pub tasks: u64,
    /// Their recorded attempts (the history of every attempt that did not succeed).
    pub attempts: u64,
}

/// `Ok` when no task of the batch is held by a live lease; else [`Error::BatchRunning`]:
/// deleting under a live worker would leave it reporting outcomes for rows that are gone.
pub(crate) fn check(code: &str, live_leases: u64) -> Result<()> {
    if live_leases > 0 {
        return Err(Error::BatchRunning {
            code: code.to_owned(),
            running: live_leases,
        });
    }
    Ok(())
}

/// A `LIKE` pattern matching every `limit_rate` row of the batch ([`super::limit_row`]): a new
/// batch may get the same id (SQLite reuses the highest), and must not inherit a spent rate.
pub(crate) fn rate_rows(batch: BatchId) -> String {
    format!("batch {} %", batch.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_matches_only_this_batchs_rows() {
        let pattern = rate_rows(BatchId(5));
        assert_eq!(pattern, "batch 5 %");
        assert!(super::super::limit_row(Some(BatchId(5)), "rate", "k").starts_with("batch 5 "));
        assert!(!super::super::limit_row(Some(BatchId(55)), "rate", "k").starts_with("batch 5 "));
    }

    #[test]
    fn live_leases_refuse() {
        assert!(check("b", 0).is_ok());
        let err = check("b", 2).unwrap_err().to_string();
        assert!(err.contains("tem batch interrupt b"), "{err}");
    }
}
