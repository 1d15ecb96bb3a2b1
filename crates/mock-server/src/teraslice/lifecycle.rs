//! The execution state machine, as a function of time: where an execution is at `now`, given
//! where it was at some earlier moment. A reader that comes late catches up every step it
//! missed, so the answer never depends on how often anyone polls.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Teraslice's 13 execution statuses (`ExecutionStatusEnum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExStatus {
    Pending,
    Scheduling,
    Initializing,
    Recovering,
    Running,
    Failing,
    Paused,
    Stopping,
    Completed,
    Stopped,
    Rejected,
    Failed,
    Terminated,
}

impl ExStatus {
    /// Every status.
    pub const ALL: [ExStatus; 13] = [
        ExStatus::Pending,
        ExStatus::Scheduling,
        ExStatus::Initializing,
        ExStatus::Recovering,
        ExStatus::Running,
        ExStatus::Failing,
        ExStatus::Paused,
        ExStatus::Stopping,
        ExStatus::Completed,
        ExStatus::Stopped,
        ExStatus::Rejected,
        ExStatus::Failed,
        ExStatus::Terminated,
    ];

    /// The terminal statuses.
    pub const TERMINAL: [ExStatus; 5] = [
        ExStatus::Completed,
        ExStatus::Stopped,
        ExStatus::Rejected,
        ExStatus::Failed,
        ExStatus::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExStatus::Pending => "pending",
            ExStatus::Scheduling => "scheduling",
            ExStatus::Initializing => "initializing",
            ExStatus::Recovering => "recovering",
            ExStatus::Running => "running",
            ExStatus::Failing => "failing",
            ExStatus::Paused => "paused",
            ExStatus::Stopping => "stopping",
            ExStatus::Completed => "completed",
            ExStatus::Stopped => "stopped",
            ExStatus::Rejected => "rejected",
            ExStatus::Failed => "failed",
            ExStatus::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<ExStatus> {
        ExStatus::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// `pending`, `scheduling`, `initializing`.
    pub fn is_initial(self) -> bool {
        matches!(
            self,
            ExStatus::Pending | ExStatus::Scheduling | ExStatus::Initializing
        )
    }

    /// `recovering`, `running`, `failing`, `paused`, `stopping`: an execution controller is up.
    pub fn is_running_group(self) -> bool {
        matches!(
            self,
            ExStatus::Recovering
                | ExStatus::Running
                | ExStatus::Failing
                | ExStatus::Paused
                | ExStatus::Stopping
        )
    }

    pub fn is_terminal(self) -> bool {
        ExStatus::TERMINAL.contains(&self)
    }

    /// Not terminal.
    pub fn is_living(self) -> bool {
        !self.is_terminal()
    }

    /// Whether Teraslice allows going from `self` to `next` (its `_verifyStatus` rules).
    pub fn may_become(self, next: ExStatus) -> bool {
        if self == next {
            return true;
        }
        if self.is_terminal() {
            return self == ExStatus::Stopped && next == ExStatus::Completed;
        }
        !(self.is_running_group() && next.is_initial())
    }
}

/// How long each timed step takes (ts-topy's durations by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub pending_ms: Millis,
    pub scheduling_ms: Millis,
    pub initializing_ms: Millis,
    pub recovering_ms: Millis,
    pub failing_ms: Millis,
    pub stopping_ms: Millis,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            pending_ms: 3_000,
            scheduling_ms: 3_000,
            initializing_ms: 4_000,
            recovering_ms: 180_000,
            failing_ms: 120_000,
            stopping_ms: 60_000,
        }
    }
}

/// The timed step out of `status`, if any: where it goes and after how long. `id_bits` decides
/// the forks (failing → failed or terminated; stopping → stopped, or completed one time in ten).
fn step(status: ExStatus, id_bits: u64, timing: &Timing) -> Option<(ExStatus, Millis)> {
    Some(match status {
        ExStatus::Pending => (ExStatus::Scheduling, timing.pending_ms),
        ExStatus::Scheduling => (ExStatus::Initializing, timing.scheduling_ms),
        ExStatus::Initializing => (ExStatus::Running, timing.initializing_ms),
        ExStatus::Recovering => (ExStatus::Running, timing.recovering_ms),
        ExStatus::Failing => {
            let to = if id_bits.is_multiple_of(2) {
                ExStatus::Failed
            } else {
                ExStatus::Terminated
            };
            (to, timing.failing_ms)
        }
        ExStatus::Stopping => {
            let to = if id_bits.is_multiple_of(10) {
                ExStatus::Completed
            } else {
                ExStatus::Stopped
            };
            (to, timing.stopping_ms)
        }
        _ => return None,
    })
}

/// One status an execution passed through, and when it entered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    pub status: ExStatus,
    pub since: Millis,
}

/// Every phase from `start` up to `now`, walking timed steps (each starts exactly when the
/// previous one was due, not when someone looked).
pub fn phases(start: Phase, now: Millis, id_bits: u64, timing: &Timing) -> Vec<Phase> {
    let mut phases = vec![start];
    let mut current = start;
    while let Some((next, after)) = step(current.status, id_bits, timing) {
        let due = current.since + after;
        if due > now {
            break;
        }
        current = Phase {
            status: next,
            since: due,
        };
        phases.push(current);
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reader_catches_up_every_missed_step() {
        let t = Timing::default();
        let start = Phase {
            status: ExStatus::Pending,
            since: 0,
        };
        let at = |now| phases(start, now, 1, &t).last().unwrap().status;
        assert_eq!(at(2_999), ExStatus::Pending);
        assert_eq!(at(3_000), ExStatus::Scheduling);
        assert_eq!(at(5_999), ExStatus::Scheduling);
        assert_eq!(at(6_000), ExStatus::Initializing);
        assert_eq!(at(10_000), ExStatus::Running);
        assert_eq!(at(1_000_000_000), ExStatus::Running, "running stays by time");
        let walked = phases(start, 60_000, 1, &t);
        let since: Vec<_> = walked.iter().map(|p| p.since).collect();
        assert_eq!(
            since,
            [0, 3_000, 6_000, 10_000],
            "each step starts when it was due"
        );
    }

    #[test]
    fn forks_are_decided_by_the_id() {
        let t = Timing::default();
        let failing = Phase {
            status: ExStatus::Failing,
            since: 0,
        };
        assert_eq!(
            phases(failing, 120_000, 2, &t).last().unwrap().status,
            ExStatus::Failed
        );
        assert_eq!(
            phases(failing, 120_000, 3, &t).last().unwrap().status,
            ExStatus::Terminated
        );
        let stopping = Phase {
            status: ExStatus::Stopping,
            since: 0,
        };
        assert_eq!(
            phases(stopping, 60_000, 10, &t).last().unwrap().status,
            ExStatus::Completed
        );
        assert_eq!(
            phases(stopping, 60_000, 11, &t).last().unwrap().status,
            ExStatus::Stopped
        );
    }

    #[test]
    fn every_timed_step_obeys_the_guard_rules() {
        let t = Timing::default();
        for status in ExStatus::ALL {
            for bits in 0..20 {
                if let Some((next, _)) = step(status, bits, &t) {
                    assert!(status.may_become(next), "{status:?} -> {next:?}");
                }
            }
        }
        assert!(!ExStatus::Running.may_become(ExStatus::Pending));
        assert!(!ExStatus::Failed.may_become(ExStatus::Running));
        assert!(ExStatus::Stopped.may_become(ExStatus::Completed));
    }
}
