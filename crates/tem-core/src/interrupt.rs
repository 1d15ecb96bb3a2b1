//! Interruption criteria: when a batch should stop on its own.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Limits after which a batch is interrupted. `None` means no limit; `Some(0)` means zero
/// tolerance. A batch's criteria override the engine's defaults key by key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterruptionCriteria {
    /// Interrupt when failed / (completed + failed) exceeds this fraction (0.0–1.0)...
    pub max_error_rate: Option<f64>,
    /// ...once at least this many tasks finished (default 20).
    pub min_sample: Option<u64>,
    /// Interrupt when more than this many tasks failed for good.
    pub max_failed_tasks: Option<u64>,
    /// Interrupt when more than this many tasks in a row failed for good.
    pub max_consecutive_failures: Option<u64>,
    /// Interrupt when more than this many attempts were answered 429.
    pub max_rate_limited: Option<u64>,
    /// Interrupt when more than this many attempts were answered 502/503/504.
    pub max_overloaded: Option<u64>,
    /// An attempt running longer than this is cancelled as a timeout.
    pub max_task_runtime_ms: Option<u64>,
    /// Interrupt when the batch has been running longer than this since it first started.
    pub max_batch_runtime_ms: Option<u64>,
}

/// The sample below which the error rate is not judged.
pub const DEFAULT_MIN_SAMPLE: u64 = 20;

impl InterruptionCriteria {
    /// Checks ranges, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if let Some(rate) = self.max_error_rate
            && (!(0.0..=1.0).contains(&rate) || rate.is_nan())
        {
            return Err(Error::invalid(
                "max_error_rate",
                format!("{rate} is not a fraction between 0.0 and 1.0"),
            ));
        }
        if self.max_task_runtime_ms == Some(0) {
            return Err(Error::invalid(
                "max_task_runtime_ms",
                "0 would time out every task; leave it unset for no limit",
            ));
        }
        Ok(())
    }

    /// `self` with every unset key taken from `defaults` (the batch wins where both are set).
    pub fn over(&self, defaults: &InterruptionCriteria) -> InterruptionCriteria {
        InterruptionCriteria {
            max_error_rate: self.max_error_rate.or(defaults.max_error_rate),
            min_sample: self.min_sample.or(defaults.min_sample),
            max_failed_tasks: self.max_failed_tasks.or(defaults.max_failed_tasks),
            max_consecutive_failures: self
                .max_consecutive_failures
                .or(defaults.max_consecutive_failures),
            max_rate_limited: self.max_rate_limited.or(defaults.max_rate_limited),
            max_overloaded: self.max_overloaded.or(defaults.max_overloaded),
            max_task_runtime_ms: self.max_task_runtime_ms.or(defaults.max_task_runtime_ms),
            max_batch_runtime_ms: self.max_batch_runtime_ms.or(defaults.max_batch_runtime_ms),
        }
    }

    /// True when no criterion is set.
    pub fn is_empty(&self) -> bool {
        *self == InterruptionCriteria::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_values_override_defaults_key_by_key() {
        let defaults = InterruptionCriteria {
            max_failed_tasks: Some(10),
            max_rate_limited: Some(5),
            ..Default::default()
        };
        let batch = InterruptionCriteria {
            max_failed_tasks: Some(0),
            ..Default::default()
        };
        let merged = batch.over(&defaults);
        assert_eq!(
            merged.max_failed_tasks,
            Some(0),
            "the batch's 0 wins over the default"
        );
        assert_eq!(
            merged.max_rate_limited,
            Some(5),
            "unset keys come from the defaults"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let c = InterruptionCriteria {
            max_error_rate: Some(1.5),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("max_error_rate"));
        let json = serde_json::json!({"max_error_rat": 0.1});
        let err = serde_json::from_value::<InterruptionCriteria>(json).unwrap_err();
        assert!(err.to_string().contains("max_error_rat"));
    }
}
