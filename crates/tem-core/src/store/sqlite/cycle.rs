//! One group commit: outcomes, rescue, renewals and claims in a single `BEGIN IMMEDIATE`
//! transaction, so finishing one batch of tasks and claiming the next costs one fsync.

use std::collections::HashMap;

use super::batches::apply_delta;
use super::{SqliteStore, claim, complete, lease};
use crate::batch::BatchId;
use crate::error::Result;
use crate::store::{BatchDelta, CycleInput, CycleOutput};
use crate::time::now_ms;

impl SqliteStore {
    /// Runs `input` in one transaction. Nothing in the output is true until this returns `Ok`.
    pub async fn run_cycle(&self, input: &CycleInput) -> Result<CycleOutput> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        // Taken after the write lock so no other writer can commit "later" with an earlier time.
        let now = now_ms();
        let mut deltas: HashMap<BatchId, BatchDelta> = HashMap::new();

        let accepted = complete::apply_outcomes(&mut tx, &input.outcomes, now, &mut deltas).await?;
        let rescued = if input.rescue {
            lease::rescue(&mut tx, now, &mut deltas).await?
        } else {
            0
        };
        let mut renewed = Vec::with_capacity(input.renewals.len());
        for request in &input.renewals {
            renewed.push(lease::renew(&mut tx, request).await?);
        }
        // Claims come last so that tasks freed by this cycle's outcomes are already counted.
        let mut claims = Vec::with_capacity(input.claims.len());
        for request in &input.claims {
            claims.push(claim::claim(&mut tx, request, now, &mut deltas).await?);
        }

        let mut progress = Vec::with_capacity(deltas.len());
        let mut batches: Vec<_> = deltas.into_iter().filter(|(_, d)| !d.is_empty()).collect();
        batches.sort_by_key(|(id, _)| *id);
        for (batch, delta) in &batches {
            progress.push(apply_delta(&mut tx, *batch, delta, now).await?);
        }
        tx.commit().await?;
        Ok(CycleOutput {
            accepted,
            renewed,
            claims,
            rescued,
            progress,
        })
    }
}
