//! Which steering operations a batch's status allows: the same rules on every backend, checked
//! inside the transaction that then makes the change.

use crate::batch::BatchStatus;
use crate::error::{Error, Result};

/// An operation on a whole batch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Steer {
    Resume,
    RetryFailed,
    Cancel,
    Enqueue,
}

impl Steer {
    /// `Ok` when a batch in `status` allows the operation; else the error that says why not.
    pub fn check(self, code: &str, status: BatchStatus) -> Result<()> {
        use BatchStatus::{Cancelled, Completed};
        let (refused, operation) = match self {
            Steer::Resume => (
                matches!(status, Cancelled | Completed),
                "resume it (use retry-failed to run its failed tasks again)",
            ),
            Steer::RetryFailed => (status == Cancelled, "retry its failed tasks"),
            Steer::Cancel => (status == Completed, "cancel it"),
            Steer::Enqueue => (status == Cancelled, "enqueue tasks into it"),
        };
        if refused {
            return Err(Error::BatchState {
                code: code.to_owned(),
                status,
                operation,
            });
        }
        Ok(())
    }
}
