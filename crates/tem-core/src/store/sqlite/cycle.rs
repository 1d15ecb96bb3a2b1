//! One group commit: outcomes, rescue, renewals and claims as one program in one
//! `BEGIN IMMEDIATE` transaction, so finishing a batch of tasks and claiming the next costs one
//! round trip to SQLite and one fsync.

use std::collections::BTreeSet;

use super::program::Program;
use super::{SqliteStore, batches, claim, complete, interrupt, lease};
use crate::batch::BatchId;
use crate::error::Result;
use crate::store::{CycleInput, CycleOutput};
use crate::time::now_ms;

impl SqliteStore {
    /// Runs `input` in one transaction. Nothing in the output is true until this returns `Ok`.
    pub async fn run_cycle(&self, input: &CycleInput) -> Result<CycleOutput> {
        // The clock is read before the write lock is taken; a competing process that commits in
        // between with a later clock only makes our leases look a few ms older than they are.
        let now = now_ms();
        let mut program = Program::transaction();
        let outcomes = if input.outcomes.is_empty() {
            None
        } else {
            Some(complete::push(&mut program, &input.outcomes, now)?)
        };
        let rescue = if input.rescue {
            Some(lease::push_rescue(&mut program, now)?)
        } else {
            None
        };
        // Judged after the outcomes that move the counters and before the claims, so a batch
        // interrupted by this commit gets no new claims in it.
        let outcome_batches: Vec<i64> = input
            .outcomes
            .iter()
            .map(|o| o.batch_id.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let check = if input.check_all || !outcome_batches.is_empty() {
            Some(interrupt::push_check(
                &mut program,
                &outcome_batches,
                input.check_all,
                self.criteria_defaults.as_deref(),
                now,
            )?)
        } else {
            None
        };
        let renewals = input
            .renewals
            .iter()
            .map(|request| lease::push_renew(&mut program, request))
            .collect::<Result<Vec<_>>>()?;
        // Claims come after outcomes so that tasks this cycle frees are claimable in it.
        let claims = input
            .claims
            .iter()
            .map(|request| claim::push(&mut program, request, now))
            .collect::<Result<Vec<_>>>()?;
        let mut touched: BTreeSet<i64> = input.outcomes.iter().map(|o| o.batch_id.0).collect();
        touched.extend(input.claims.iter().filter_map(|c| c.batch.map(|b| b.0)));
        let everything_active =
            input.rescue || input.check_all || input.claims.iter().any(|c| c.batch.is_none());
        let progress = batches::push_progress(&mut program, &touched, everything_active, now)?;

        let mut conn = self.write.acquire().await?;
        let results = program.run(&mut conn).await?;
        Ok(CycleOutput {
            accepted: match &outcomes {
                Some(section) => section.accepted(&results, &input.outcomes)?,
                None => Vec::new(),
            },
            rescued: rescue.map_or(0, |statement| results[statement].changes),
            interrupted: match check {
                Some(statement) => results[statement]
                    .rows
                    .iter()
                    .map(|row| Ok(BatchId(sqlx::Row::try_get(row, 0)?)))
                    .collect::<Result<_>>()?,
                None => Vec::new(),
            },
            renewed: renewals
                .into_iter()
                .map(|statement| lease::renewed(&results, statement))
                .collect::<Result<_>>()?,
            claims: claims
                .iter()
                .map(|section| section.result(&results))
                .collect::<Result<_>>()?,
            progress: batches::progress(&results, progress)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::batch::NewBatch;
    use crate::engine::EngineOptions;
    use crate::store::{ClaimRequest, ClaimResult, ClaimedTask, Next, OutcomeRow, RenewRequest};
    use crate::task::{AttemptOutcome, NewTask, TaskStatus};

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, &EngineOptions::default()).await.unwrap();
        (dir, store)
    }

    fn claim(owner: &str, lease: Duration) -> ClaimRequest {
        ClaimRequest {
            owner: owner.into(),
            types_json: r#"["t"]"#.into(),
            batch: None,
            max: 10,
            lease,
            pause_key: None,
            shared: Default::default(),
            spent_rate: None,
        }
    }

    async fn claimed(store: &SqliteStore, request: ClaimRequest) -> Vec<ClaimedTask> {
        let input = CycleInput {
            claims: vec![request],
            ..Default::default()
        };
        match store.run_cycle(&input).await.unwrap().claims.remove(0) {
            ClaimResult::Claimed(tasks) => tasks,
            other => panic!("expected tasks, got {other:?}"),
        }
    }

    fn done(task: &ClaimedTask, worker: &str) -> OutcomeRow {
        OutcomeRow {
            task_id: task.id,
            lease_token: task.lease_token,
            batch_id: task.batch_id,
            attempt: task.attempt,
            worker: Arc::from(worker),
            started_at: 1,
            finished_at: 2,
            next: Next::Complete {
                result: Some(format!("\"{worker}\"")),
            },
            outcome: AttemptOutcome::Succeeded,
            http_status: None,
            message: None,
            pause: None,
            history: false, // as the executor does for a success
            budget_correction: None,
        }
    }

    #[tokio::test]
    async fn a_worker_whose_lease_was_taken_over_cannot_write() {
        let (_dir, store) = store().await;
        let batch = store.create_batch(&NewBatch::new("fence", "t")).await.unwrap();
        store
            .enqueue(batch.id, &[NewTask::new("t", &1).unwrap()], 3, None)
            .await
            .unwrap();

        // The zombie claims with a lease that expires at once, and goes quiet.
        let zombie = claimed(&store, claim("zombie", Duration::ZERO)).await;
        assert_eq!(zombie.len(), 1);
        let mut rescued = 0;
        for _ in 0..200 {
            let input = CycleInput {
                rescue: true,
                ..Default::default()
            };
            rescued = store.run_cycle(&input).await.unwrap().rescued;
            if rescued == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(rescued, 1);
        let live = claimed(&store, claim("live", Duration::from_secs(30))).await;
        assert_eq!(live[0].id, zombie[0].id);
        assert_ne!(live[0].lease_token, zombie[0].lease_token);

        // The zombie wakes up: its renewal and its outcome are both refused.
        let renew = RenewRequest {
            owner: "zombie".into(),
            ids: vec![zombie[0].id],
            expires_at: i64::MAX,
        };
        let input = CycleInput {
            renewals: vec![renew],
            outcomes: vec![done(&zombie[0], "zombie")],
            ..Default::default()
        };
        let out = store.run_cycle(&input).await.unwrap();
        assert_eq!(out.accepted, [false]);
        assert!(out.renewed[0].held.is_empty());
        let task = store.task(zombie[0].id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Running);
        assert_eq!(task.lease_owner.as_deref(), Some("live"));

        // The live holder's outcome lands.
        let out = store
            .run_cycle(&CycleInput {
                outcomes: vec![done(&live[0], "live")],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(out.accepted, [true]);
        let task = store.task(live[0].id).await.unwrap().unwrap();
        assert_eq!(
            (task.status, task.result.as_deref()),
            (TaskStatus::Completed, Some("\"live\""))
        );
        let attempts = store.attempts(task.id).await.unwrap();
        let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [AttemptOutcome::LeaseExpired, AttemptOutcome::Succeeded]
        );
        assert_eq!(attempts[0].worker.as_deref(), Some("zombie"));
        assert_eq!(
            attempts[1].worker.as_deref(),
            Some("live"),
            "the task row keeps its successful worker"
        );
        assert_eq!(store.batch(batch.id).await.unwrap().unwrap().stats.completed, 1);
    }
}
