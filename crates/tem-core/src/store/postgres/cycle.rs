//! One group commit: outcomes, rescue, criteria, renewals and claims in one transaction, after
//! locking the batch rows they touch in id order.

use std::collections::BTreeSet;

use super::{PgStore, claim, complete, interrupt, lease, lock_batches, notify};
use crate::error::Result;
use crate::store::{CycleInput, CycleOutput, Next};
use crate::time::now_ms;

impl PgStore {
    /// Runs `input` in one transaction. Nothing in the output is true until this returns `Ok`.
    pub async fn run_cycle(&self, input: &CycleInput) -> Result<CycleOutput> {
        let mut touched: BTreeSet<i64> = input.outcomes.iter().map(|o| o.batch_id.0).collect();
        touched.extend(input.claims.iter().filter_map(|c| c.batch.map(|b| b.0)));
        let touched: Vec<i64> = touched.into_iter().collect();
        // A rescue or a claim across batches may touch any batch with work.
        let everything_active =
            input.rescue || input.check_all || input.claims.iter().any(|c| c.batch.is_none());

        let mut tx = self.pool.begin().await?;
        let own_criteria = lock_batches(&mut tx, &touched, everything_active).await?;
        // Read after the lock: a commit that queued behind another must not lease, rescue or
        // schedule with the time it started waiting.
        let now = now_ms();
        let accepted = if input.outcomes.is_empty() {
            Vec::new()
        } else {
            complete::apply(&mut tx, &input.outcomes, now).await?
        };
        let rescued = if input.rescue {
            lease::rescue(&mut tx, now).await?
        } else {
            0
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
        // A commit where no criteria apply (none by default, none on the batches it locked)
        // skips the check's round trip: the check would find nothing to judge.
        let judged = self.criteria_defaults.is_some() || own_criteria;
        let interrupted = if judged && (input.check_all || !outcome_batches.is_empty()) {
            interrupt::check(
                &mut tx,
                &outcome_batches,
                input.check_all,
                self.criteria_defaults.as_deref(),
                now,
            )
            .await?
        } else {
            Vec::new()
        };
        let mut renewed = Vec::with_capacity(input.renewals.len());
        for request in &input.renewals {
            renewed.push(lease::renew(&mut tx, request).await?);
        }
        // Claims come after outcomes so that tasks this cycle frees are claimable in it.
        let mut claims = Vec::with_capacity(input.claims.len());
        for request in &input.claims {
            claims.push(claim::claim(&mut tx, request, now).await?);
        }
        let progress = super::batches::progress_of(&mut tx, &touched, everything_active, now).await?;
        // Tasks that became runnable for other processes: given back, or rescued.
        let freed = rescued > 0
            || input
                .outcomes
                .iter()
                .any(|o| matches!(o.next, Next::Release | Next::Retry { .. }));
        if freed {
            notify::work_available(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(CycleOutput {
            accepted,
            renewed,
            claims,
            rescued,
            interrupted,
            progress,
        })
    }
}
