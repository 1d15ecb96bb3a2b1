//! The worker loop: wait for a free slot → pick a lane whose limits allow a call → claim up to
//! the free slots in one request → spawn an executor per task. Idle lanes sleep until new work
//! is announced, a retry comes due, or the poll interval passes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{BatchId, BatchStatus};
use crate::committer::TopUp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::handler::{Handler, typed};
use crate::interrupt::InterruptionCriteria;
use crate::lane::{Lane, Limits, Readiness};
use crate::limit::{AdaptiveConcurrency, Aimd, BreakerState, CircuitBreaker, ConcurrencyPermit};
use crate::outcome::TaskError;
use crate::retry::RetryPolicy;
use crate::store::{
    ClaimRequest, ClaimResult, ClaimedTask, Next, OutcomeRow, SharedLimits, SpentRate, limit_row,
};
use crate::task::TaskId;
use crate::time::Millis;
use crate::{executor, lease};

/// How far ahead a rate-limited lane may reserve grants for one claim.
const RATE_LOOKAHEAD: Duration = Duration::from_millis(20);

/// On a database whose limits live in each process (SQLite), how long after its claim a task of
/// a rate-limited key may start. The claim makes durable the rate state that starts until then
/// can reach, so a rerun after a kill resumes from it; a start later than this (a stalled
/// machine) gives the task back instead. The price: a rerun right after a kill waits up to this
/// long (plus one interval) for its first call.
const START_WITHIN: Duration = Duration::from_secs(1);

/// What a worker does with the in-flight tasks of a batch that is interrupted or cancelled
/// while they run. Either way it claims no more of that batch's tasks, and gives back the ones
/// it had claimed ahead without starting them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Let them finish and record their outcomes.
    #[default]
    Drain,
    /// Cancel them and give them back to the queue without charging the attempt.
    Abort,
}

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Most tasks running at once.
    pub concurrency: usize,
    /// Back off concurrency on 429/502/503/504 and grow it back while calls succeed
    /// (`None`: fixed concurrency).
    pub adaptive: Option<Aimd>,
    /// Most tasks claimed in one request.
    pub max_claim: u32,
    /// How long a claim is good for without renewal; renewed every third of it.
    pub lease: Duration,
    /// How often an idle worker looks for work another process enqueued.
    pub poll_interval: Duration,
    /// How often expired leases are rescued.
    pub rescue_interval: Duration,
    /// Cancel an attempt that runs longer (a retryable timeout). A batch's
    /// `max_task_runtime_ms` applies too; the shorter wins.
    pub timeout: Option<Duration>,
    /// Serve only this batch (otherwise every active batch, oldest first).
    pub batch: Option<BatchId>,
    /// Tasks claimed ahead of free slots, so a finishing task's slot is refilled at once instead
    /// of after a commit. `None`: as many as `concurrency`. Always 0 when the worker has a rate
    /// limit or budget: throttled tasks stay `pending` until their turn.
    pub prefetch: Option<usize>,
    /// In-flight tasks of a batch that stops: drain (default) or abort.
    pub on_interrupt: OnInterrupt,
    /// Most of the batch's tasks running at once across every process on a shared database
    /// (Postgres), counted in the database; `None`: only this worker's `concurrency` holds. A
    /// rate limit on such a database is always shared.
    pub batch_concurrency: Option<u32>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 8,
            adaptive: Some(Aimd::default()),
            max_claim: 64,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            rescue_interval: Duration::from_secs(5),
            timeout: None,
            batch: None,
            prefetch: None,
            on_interrupt: OnInterrupt::Drain,
            batch_concurrency: None,
        }
    }
}

impl WorkerOptions {
    /// Sets the concurrency.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Serves only `batch`.
    pub fn batch(mut self, batch: BatchId) -> Self {
        self.batch = Some(batch);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the lease duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Keeps concurrency fixed.
    pub fn fixed_concurrency(mut self) -> Self {
        self.adaptive = None;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        if self.max_claim == 0 {
            return Err(Error::invalid("max_claim", "must be at least 1"));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(Error::invalid(
                "lease",
                "must be at least 300 ms (it is renewed every third)",
            ));
        }
        if self.poll_interval.is_zero() || self.rescue_interval.is_zero() {
            return Err(Error::invalid(
                "poll_interval",
                "intervals must be longer than zero",
            ));
        }
        if let Some(aimd) = self.adaptive
            && !(aimd.decrease_factor > 0.0 && aimd.decrease_factor < 1.0)
        {
            return Err(Error::invalid(
                "decrease_factor",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        Ok(())
    }
}

/// Stops a running worker from elsewhere.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// Stop claiming; let in-flight tasks finish and commit (graceful).
    pub fn drain(&self) {
        self.stop.cancel();
    }

    /// Stop now: cancel in-flight handlers and give their tasks back without charging the
    /// attempt.
    pub fn abort(&self) {
        // Stop first, so nothing sees "aborting" without also seeing "stopping".
        self.stop.cancel();
        self.abort.cancel();
    }

    /// True once a drain or abort was asked for.
    pub fn is_requested(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// What a worker did during one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    /// Tasks given back unrun by an abort.
    pub released: u64,
}

/// A worker: handlers for some task types, limits per key, and a loop that runs them.
pub struct Worker {
    engine: Engine,
    options: WorkerOptions,
    handlers: HashMap<String, Arc<dyn Handler>>,
    keys: HashMap<String, String>,
    limits: HashMap<String, Limits>,
    shutdown: Shutdown,
    owner: Arc<str>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("owner", &self.owner)
            .field("types", &self.handlers.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish()
    }
}

impl Worker {
    pub(crate) fn new(engine: Engine, options: WorkerOptions) -> Self {
        let owner = format!(
            "{}-{}-{:08x}",
            host_name(),
            std::process::id(),
            rand::random::<u32>()
        );
        Worker {
            engine,
            options,
            handlers: HashMap::new(),
            keys: HashMap::new(),
            limits: HashMap::new(),
            shutdown: Shutdown::default(),
            owner: owner.into(),
        }
    }

    /// Runs tasks of type `kind` with `f(payload, ctx)`; payload and result are serde types.
    pub fn handle<P, R, F, Fut>(self, kind: impl Into<String>, f: F) -> Self
    where
        P: serde::de::DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(P, crate::TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<R, TaskError>> + Send + 'static,
    {
        self.handler(kind, typed(f))
    }

    /// Runs tasks of type `kind` with a [`Handler`].
    pub fn handler(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Puts task type `kind` under limit key `key` (by default each type is its own key), e.g.
    /// several types that call the same host.
    pub fn key(mut self, kind: impl Into<String>, key: impl Into<String>) -> Self {
        self.keys.insert(kind.into(), key.into());
        self
    }

    /// Limits for `key` (a task type, or a key set with [`Worker::key`]).
    pub fn limit(mut self, key: impl Into<String>, limits: Limits) -> Self {
        self.limits.insert(key.into(), limits);
        self
    }

    /// This worker's lease-owner id.
    pub fn id(&self) -> &str {
        &self.owner
    }

    /// A handle to stop the worker while it runs.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until stopped through [`Worker::shutdown_handle`].
    pub async fn run(self) -> Result<RunReport> {
        self.run_loop(false).await
    }

    /// Runs until nothing is left for it: no task of its types pending in an active batch of its
    /// scope, or running anywhere (a running task may come back through a retry or a rescue).
    pub async fn run_until_idle(self) -> Result<RunReport> {
        self.run_loop(true).await
    }

    async fn run_loop(self, until_idle: bool) -> Result<RunReport> {
        let shared = Arc::new(self.into_shared()?);
        restore_rates(&shared).await?;
        let keeper_stop = CancellationToken::new();
        // If this future is dropped mid-run (its owner gave up on it), stop renewing leases: the
        // tasks it held must expire and be rescued, not stay leased forever.
        let keeper_guard = keeper_stop.clone().drop_guard();
        let keeper = tokio::spawn(lease::keep(shared.clone(), keeper_stop.clone()));
        let listener = tokio::spawn(listen(shared.clone(), keeper_stop));
        let mut executors = JoinSet::new();
        let result = drive(&shared, &mut executors, until_idle).await;
        if shared.is_aborting() {
            shared.cancel_all();
        }
        while executors.join_next().await.is_some() {}
        // Tasks claimed ahead that never started go back, uncharged and unrecorded.
        shared.release_buffered().await;
        drop(keeper_guard);
        let _ = keeper.await;
        let _ = listener.await;
        let releases: Vec<_> = lock(&shared.releases).drain(..).collect();
        for release in releases {
            let _ = release.await;
        }
        result?;
        if let Some(error) = shared.take_fatal() {
            return Err(error);
        }
        Ok(shared.run_report())
    }

    fn into_shared(self) -> Result<Shared> {
        self.options.validate()?;
        if self.handlers.is_empty() {
            return Err(Error::invalid(
                "handlers",
                "register at least one handler before running a worker",
            ));
        }
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for kind in self.handlers.keys() {
            let key = self.keys.get(kind).cloned().unwrap_or_else(|| kind.clone());
            by_key.entry(key).or_default().push(kind.clone());
        }
        for (key, limits) in &self.limits {
            if !by_key.contains_key(key) {
                return Err(Error::invalid(
                    "limit key",
                    format!("`{key}` is neither a registered task type nor a key given to Worker::key"),
                ));
            }
            for quota in limits.rate.iter().chain(limits.budget.iter()) {
                quota.validate()?;
            }
            if let Some(breaker) = &limits.breaker {
                breaker.validate()?;
            }
        }
        let mut keys: Vec<_> = by_key.into_iter().collect();
        keys.sort();
        let lanes = keys
            .into_iter()
            .map(|(key, mut types)| {
                types.sort();
                let limits = self.limits.get(&key).copied().unwrap_or_default();
                Arc::new(Lane::new(key.into(), &types, limits))
            })
            .collect();
        let mut all_types: Vec<&String> = self.handlers.keys().collect();
        all_types.sort();
        let limited = self
            .limits
            .values()
            .any(|l| l.rate.is_some() || l.budget.is_some());
        let prefetch = match (limited, self.options.prefetch) {
            (true, _) | (false, Some(0)) => None,
            (false, Some(n)) => Some(n),
            (false, None) => Some(self.options.concurrency.min(256)),
        };
        Ok(Shared {
            prefetch: prefetch.map(|n| Arc::new(Semaphore::new(n))),
            buffer: Mutex::new(VecDeque::new()),
            stopped_batches: Mutex::new(HashSet::new()),
            releases: Mutex::new(Vec::new()),
            all_types_json: serde_json::to_string(&all_types).unwrap_or_default(),
            concurrency: AdaptiveConcurrency::new(self.options.concurrency, self.options.adaptive),
            engine: self.engine,
            owner: self.owner,
            options: self.options,
            handlers: self.handlers,
            lanes,
            inflight: Mutex::new(HashMap::new()),
            batches: Mutex::new(HashMap::new()),
            retries: Mutex::new(BinaryHeap::new()),
            limits_changed: Notify::new(),
            shutdown: self.shutdown,
            fatal: Mutex::new(None),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            released: AtomicU64::new(0),
        })
    }
}

/// Continues each rate-limited key from how far earlier runs of the same batch spent it (a
/// killed run's last claims included), so a rerun cannot start with a fresh quota.
async fn restore_rates(shared: &Shared) -> Result<()> {
    let store = shared.engine.store();
    for lane in shared.lanes.iter().filter(|lane| lane.rate.is_some()) {
        let row = limit_row(shared.options.batch, "rate", &lane.key);
        let spent = shared
            .engine
            .patiently("read the rate state", || store.spent_rate(&row))
            .await?;
        if let Some(tat_us) = spent {
            let ahead = tat_us.saturating_sub(crate::time::now_us());
            if let Ok(ahead) = u64::try_from(ahead) {
                lane.restore_rate(Instant::now() + Duration::from_micros(ahead));
            }
        }
    }
    Ok(())
}

/// Follows this process's progress events: a batch stopped here is acted on at once (other
/// processes' stops arrive through lease renewal).
async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    let mut events = shared.engine.events();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = stop.cancelled() => return,
        };
        match event {
            Ok(Event::Progress(progress)) if progress.status.stops_work() => {
                shared.batch_stopped(progress.batch_id)
            }
            Ok(Event::Progress(progress)) if progress.status == BatchStatus::Active => {
                lock(&shared.stopped_batches).remove(&progress.batch_id);
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The main loop; returns when stopped, idle (if asked) or on a fatal error.
async fn drive(shared: &Arc<Shared>, executors: &mut JoinSet<()>, until_idle: bool) -> Result<()> {
    let mut next_lane = 0usize;
    // Registered for wake-ups before every look, and kept registered until it fires: an
    // enqueue between a look and the wait, or during a claim, is never missed.
    let mut wake = work_wake(shared);
    loop {
        while executors.try_join_next().is_some() {}
        if shared.shutdown.is_requested() || shared.has_fatal() {
            return Ok(());
        }
        let seed = tokio::select! {
            // Stop wins: an abort frees slots as it cancels, and those must not claim again.
            biased;
            () = shared.shutdown.stop.cancelled() => return Ok(()),
            permit = shared.concurrency.acquire() => Slot::Run(permit),
            slot = acquire_ahead(shared.prefetch.as_ref()) => Slot::Ahead(slot),
        };
        // A free slot serves a task claimed ahead before anything is claimed.
        let seed = match seed {
            Slot::Run(permit) => match shared.pop_buffered() {
                Some(buffered) => {
                    shared.spawn(executors, buffered, permit);
                    continue;
                }
                None => Slot::Run(permit),
            },
            ahead => ahead,
        };
        let now = Instant::now();
        if shared.retry_due(now) {
            shared.lanes.iter().for_each(|lane| lane.wake());
        }
        match pick_lane(shared, now, &mut next_lane) {
            Pick::Lane(lane) => {
                claim_and_spawn(shared, executors, lane, seed).await?;
                // Work that arrived while the claim ran was not in its snapshot, and the
                // claim may have marked the lane idle: look again rather than lose the wake-up.
                if futures::FutureExt::now_or_never(wake.as_mut()).is_some() {
                    shared.lanes.iter().for_each(|lane| lane.wake());
                    wake = work_wake(shared);
                }
            }
            Pick::Wait { until } => {
                drop(seed);
                // Whatever the lanes wait for (a pause, a rate grant, new work), a worker asked to
                // stop when idle stops as soon as nothing is left for it.
                if until_idle && shared.inflight_is_empty() {
                    let batch = shared.options.batch;
                    let store = shared.engine.store();
                    let has_work = shared
                        .engine
                        .patiently("look for work", || store.has_work(&shared.all_types_json, batch))
                        .await?;
                    if !has_work {
                        return Ok(());
                    }
                }
                let until = until.min(now + shared.options.poll_interval);
                let until = shared.next_retry().map_or(until, |retry| until.min(retry));
                let woken = tokio::select! {
                    () = tokio::time::sleep_until(until) => false,
                    () = wake.as_mut() => true,
                    () = shared.limits_changed.notified() => false,
                    () = shared.shutdown.stop.cancelled() => return Ok(()),
                };
                if woken {
                    shared.lanes.iter().for_each(|lane| lane.wake());
                    wake = work_wake(shared);
                }
            }
        }
    }
}

/// A registration for the engine's work wake-ups, enabled at once.
fn work_wake(shared: &Shared) -> Pin<Box<tokio::sync::futures::Notified<'_>>> {
    let mut wake = Box::pin(shared.engine.wake().notified());
    wake.as_mut().enable();
    wake
}

enum Pick {
    Lane(Arc<Lane>),
    Wait { until: Instant },
}

/// Round-robin over lanes ready to claim; otherwise when the first one will be.
fn pick_lane(shared: &Shared, now: Instant, next: &mut usize) -> Pick {
    let count = shared.lanes.len();
    let mut soonest: Option<Instant> = None;
    for offset in 0..count {
        let index = (*next + offset) % count;
        match shared.lanes[index].readiness(now) {
            Readiness::Ready => {
                *next = index + 1;
                return Pick::Lane(shared.lanes[index].clone());
            }
            Readiness::Wait { until, .. } => {
                soonest = Some(soonest.map_or(until, |s| s.min(until)));
            }
        }
    }
    Pick::Wait {
        until: soonest.unwrap_or(now + shared.options.poll_interval),
    }
}

async fn claim_and_spawn(
    shared: &Arc<Shared>,
    executors: &mut JoinSet<()>,
    lane: Arc<Lane>,
    seed: Slot,
) -> Result<()> {
    let mut grants = Vec::new();
    if let Some(rate) = &lane.rate {
        match rate.try_acquire() {
            Some(grant) => grants.push(grant),
            None => return Ok(()), // another lane's claim used the moment; look again
        }
    }
    let capacity = Arc::new(Capacity {
        concurrency: shared.concurrency.clone(),
        prefetch: shared.prefetch.clone(),
        limit: claim_limit(shared, &lane),
        slots: Mutex::new(vec![seed]),
    });
    let top_up: Option<Arc<dyn TopUp>> = match &lane.rate {
        // Every task of a rate-limited lane needs its grant before the claim. Grants due within a
        // short lookahead are taken too, so a fast quota is not capped by one claim per commit;
        // the lane's start gate then spaces the actual calls.
        Some(rate) => {
            let now = Instant::now();
            let by = now + RATE_LOOKAHEAD;
            while capacity.len() < capacity.limit {
                let Some(permit) = shared.concurrency.try_acquire() else {
                    break;
                };
                let Some(grant) = rate.try_acquire_by(now, by) else {
                    break;
                };
                grants.push(grant);
                lock(&capacity.slots).push(Slot::Run(permit));
            }
            None
        }
        None if lane.budget.is_some() => None,
        None => Some(capacity.clone()),
    };
    // Every start this claim's grants can lead to, made durable with the claim (SQLite; a
    // shared database keeps the schedule itself).
    let start_by = Instant::now() + START_WITHIN;
    let spent_rate = if shared.engine.store().is_shared() {
        None
    } else {
        lane.rate_spent_by(start_by).map(|tat| SpentRate {
            row: limit_row(shared.options.batch, "rate", &lane.key),
            tat_us: crate::time::now_us().saturating_add(
                i64::try_from(tat.saturating_duration_since(Instant::now()).as_micros()).unwrap_or(i64::MAX),
            ),
        })
    };
    let request = ClaimRequest {
        spent_rate: spent_rate.clone(),
        owner: shared.owner.clone(),
        types_json: lane.types_json.clone(),
        batch: shared.options.batch,
        max: u32::try_from(capacity.len()).unwrap_or(u32::MAX),
        lease: shared.options.lease,
        pause_key: Some(lane.key.clone()),
        shared: if shared.engine.store().is_shared() {
            SharedLimits {
                concurrency: shared.options.batch_concurrency,
                rate: lane.rate.as_ref().map(|rate| rate.quota()),
                budget: lane.budget.as_ref().map(|budget| budget.quota()),
            }
        } else {
            SharedLimits::default()
        },
    };
    // Never cancelled midway: claimed rows must reach an executor or they sit leased until the
    // lease expires.
    // The lease runs from the claim's commit, which is later than this: a safe lower bound.
    let leased_until = Instant::now() + shared.options.lease;
    let result = shared.engine.committer().claim(request, top_up).await;
    let mut slots = std::mem::take(&mut *lock(&capacity.slots));
    let claimed = match result {
        Ok(ClaimResult::Claimed(tasks)) => tasks,
        Ok(ClaimResult::Paused { until }) => {
            refund(&lane, grants);
            lane.pause_until(instant_at(until));
            return Ok(());
        }
        Ok(ClaimResult::Throttled { until }) => {
            refund(&lane, grants);
            lane.throttle_until(instant_at(until));
            return Ok(());
        }
        Err(error) if error.is_transient() => {
            refund(&lane, grants);
            tracing::warn!(%error, "claim failed (transient); retrying after the poll interval");
            lane.mark_idle(Instant::now() + shared.options.poll_interval);
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    if claimed.is_empty() {
        refund(&lane, grants);
        lane.mark_idle(Instant::now() + shared.options.poll_interval);
        return Ok(());
    }
    let mut claimed = shared.keep_for(slots.len(), claimed, &lane);
    if spent_rate.is_some() {
        claimed.iter_mut().for_each(|task| task.start_by = Some(start_by));
    }
    let unused = grants.len().saturating_sub(claimed.len());
    refund(&lane, grants.split_off(grants.len() - unused));
    // Run permits first: the first tasks start now, the rest wait in the buffer.
    slots.sort_by_key(|slot| matches!(slot, Slot::Ahead(_)));
    for (task, slot) in claimed.into_iter().zip(slots) {
        if let Some(budget) = &lane.budget {
            budget.spend(task.cost);
        }
        let cancel = shared.shutdown.abort.child_token();
        shared.start(&task, cancel.clone(), leased_until);
        let buffered = Buffered {
            lane: lane.clone(),
            task,
            cancel,
            slot: None,
        };
        match slot {
            // A stop that arrived during the claim: buffer everything, to be given back.
            Slot::Run(permit) if !shared.shutdown.is_requested() => shared.spawn(executors, buffered, permit),
            Slot::Run(_) => lock(&shared.buffer).push_back(buffered),
            Slot::Ahead(ahead) => lock(&shared.buffer).push_back(Buffered {
                slot: Some(ahead),
                ..buffered
            }),
        }
    }
    Ok(())
}

/// Most tasks one claim of `lane` may take.
fn claim_limit(shared: &Shared, lane: &Lane) -> usize {
    if let Some(BreakerState::HalfOpen) = lane.breaker.as_ref().map(CircuitBreaker::state) {
        // Probing: only as many as the probes, so the rest is not claimed to wait.
        return 1;
    }
    // A weighted budget learns each task's cost only once claimed: one at a time.
    if lane.budget.is_some() {
        1
    } else {
        shared.options.max_claim as usize
    }
}

/// One unit of capacity to claim for: a slot to run now, or a place in the prefetch buffer.
enum Slot {
    Run(ConcurrencyPermit),
    Ahead(OwnedSemaphorePermit),
}

/// The capacity behind one claim; grows when the claim's transaction is assembled.
struct Capacity {
    concurrency: Arc<AdaptiveConcurrency>,
    prefetch: Option<Arc<Semaphore>>,
    limit: usize,
    slots: Mutex<Vec<Slot>>,
}

impl Capacity {
    fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

impl TopUp for Capacity {
    fn top_up(&self) -> u32 {
        let mut slots = lock(&self.slots);
        let mut took = 0;
        while slots.len() < self.limit {
            if let Some(permit) = self.concurrency.try_acquire() {
                slots.push(Slot::Run(permit));
            } else if let Some(ahead) = self
                .prefetch
                .as_ref()
                .and_then(|p| p.clone().try_acquire_owned().ok())
            {
                slots.push(Slot::Ahead(ahead));
            } else {
                break;
            }
            took += 1;
        }
        took
    }
}

/// A prefetch slot, or never when the worker does not prefetch.
async fn acquire_ahead(prefetch: Option<&Arc<Semaphore>>) -> OwnedSemaphorePermit {
    match prefetch {
        Some(semaphore) => match semaphore.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => std::future::pending().await, // never closed
        },
        None => std::future::pending().await,
    }
}

/// A claimed task waiting for a slot (or about to get one).
pub(crate) struct Buffered {
    lane: Arc<Lane>,
    task: ClaimedTask,
    cancel: CancellationToken,
    /// Its place in the prefetch buffer, given back when it starts.
    slot: Option<OwnedSemaphorePermit>,
}

fn refund(lane: &Lane, grants: Vec<crate::limit::Grant>) {
    if let Some(rate) = &lane.rate {
        // Latest first: only an undisturbed tail of grants can be given back.
        for grant in grants.into_iter().rev() {
            rate.refund(grant);
        }
    }
}

/// The in-process instant for a wall-clock time.
fn instant_at(at: Millis) -> Instant {
    Instant::now() + crate::time::until(at)
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// One claim of a task: the task and the lease token it was claimed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub task: TaskId,
    pub token: i64,
}

#[derive(Debug)]
struct InFlight {
    /// The claim's lease token: bookkeeping of an older attempt of the same task must not touch
    /// this one.
    token: i64,
    batch: BatchId,
    cancel: CancellationToken,
    /// The outcome is on its way to the database; a renewal that misses it is not a lost lease.
    reporting: bool,
    /// The lease is known to hold until then (the last claim or renewal the database confirmed).
    leased_until: Instant,
    /// Stopped because no renewal was confirmed in time: the lease was about to lapse.
    lapsing: bool,
}

/// Per-batch settings a worker needs at outcome time, read once per batch per run.
#[derive(Clone, Debug)]
struct BatchSettings {
    retry: Arc<RetryPolicy>,
    criteria: InterruptionCriteria,
}

/// State shared by the loop, its executors and its lease keeper.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) owner: Arc<str>,
    pub(crate) options: WorkerOptions,
    pub(crate) concurrency: Arc<AdaptiveConcurrency>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    lanes: Vec<Arc<Lane>>,
    all_types_json: String,
    inflight: Mutex<HashMap<TaskId, InFlight>>,
    prefetch: Option<Arc<Semaphore>>,
    buffer: Mutex<VecDeque<Buffered>>,
    /// Batches seen interrupted or cancelled during this run (until seen active again).
    stopped_batches: Mutex<HashSet<BatchId>>,
    /// Give-backs of tasks claimed ahead, awaited before the run returns.
    releases: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    batches: Mutex<HashMap<BatchId, BatchSettings>>,
    /// When this worker's retries come due, soonest first: each one wakes the loop, so retries
    /// due a moment apart are not left for the next poll.
    retries: Mutex<BinaryHeap<Reverse<Instant>>>,
    /// Signalled when a limit gave capacity back early (a budget correction).
    pub(crate) limits_changed: Notify,
    shutdown: Shutdown,
    fatal: Mutex<Option<Error>>,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    released: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    pub(crate) fn is_aborting(&self) -> bool {
        self.shutdown.abort.is_cancelled()
    }

    fn spawn(self: &Arc<Self>, executors: &mut JoinSet<()>, buffered: Buffered, permit: ConcurrencyPermit) {
        let Buffered {
            lane,
            task,
            cancel,
            slot,
        } = buffered;
        drop(slot);
        executors.spawn(executor::execute(self.clone(), lane, task, permit, cancel));
    }

    fn pop_buffered(&self) -> Option<Buffered> {
        lock(&self.buffer).pop_front()
    }

    /// The next buffered task for a slot that just finished one, unless the slot should be
    /// returned (a stop was asked for, or concurrency is shrinking).
    pub(crate) fn next_buffered(&self) -> Option<(Arc<Lane>, ClaimedTask, CancellationToken)> {
        if self.shutdown.is_requested() || self.concurrency.is_shrinking() {
            return None;
        }
        let Buffered {
            lane,
            task,
            cancel,
            slot,
        } = self.pop_buffered()?;
        drop(slot);
        Some((lane, task, cancel))
    }

    /// Queues an outcome for the group commit; the returned future waits for the commit and
    /// does the bookkeeping.
    pub(crate) fn report(self: &Arc<Self>, row: OutcomeRow) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let claim = Claim {
            task: row.task_id,
            token: row.lease_token,
        };
        self.mark_reporting(claim);
        let id = row.task_id;
        let next = row.next.clone();
        let committed = self.engine.committer().outcome(row);
        let shared = self.clone();
        Box::pin(async move {
            match committed.await {
                Ok(true) => shared.count(&next),
                Ok(false) => tracing::warn!(
                    task = id.0,
                    "lease was taken over before the outcome committed; outcome dropped"
                ),
                Err(error) => shared.fail(error),
            }
            shared.finish(claim);
        })
    }

    async fn release_buffered(self: &Arc<Self>) {
        let buffered: Vec<Buffered> = lock(&self.buffer).drain(..).collect();
        self.release(buffered).await;
    }

    /// Gives tasks claimed ahead back to the queue: unstarted, uncharged, unrecorded.
    fn release(self: &Arc<Self>, tasks: Vec<Buffered>) -> impl Future<Output = ()> + Send + use<> {
        let now = crate::time::now_ms();
        let pending: Vec<_> = tasks
            .into_iter()
            .map(|b| {
                self.report(OutcomeRow {
                    task_id: b.task.id,
                    lease_token: b.task.lease_token,
                    batch_id: b.task.batch_id,
                    attempt: b.task.attempt,
                    worker: self.owner.clone(),
                    started_at: now,
                    finished_at: now,
                    next: Next::Release,
                    outcome: crate::task::AttemptOutcome::Aborted,
                    http_status: None,
                    message: Some("claimed ahead and given back unstarted".to_owned()),
                    pause: None,
                    history: false,
                    budget_correction: None,
                })
            })
            .collect();
        async move {
            futures::future::join_all(pending).await;
        }
    }

    /// Keeps the first `slots` of `claimed`; any beyond them go back to the queue at once,
    /// unstarted and uncharged, rather than sit leased to nobody until their lease lapses.
    fn keep_for(
        self: &Arc<Self>,
        slots: usize,
        mut claimed: Vec<ClaimedTask>,
        lane: &Arc<Lane>,
    ) -> Vec<ClaimedTask> {
        if claimed.len() <= slots {
            return claimed;
        }
        let extra = claimed.split_off(slots);
        tracing::error!(
            claimed = claimed.len() + extra.len(),
            slots,
            "a claim returned more tasks than it had slots for; giving the rest back"
        );
        let extra = extra
            .into_iter()
            .map(|task| Buffered {
                lane: lane.clone(),
                task,
                cancel: CancellationToken::new(),
                slot: None,
            })
            .collect();
        let release = self.release(extra);
        lock(&self.releases).push(tokio::spawn(release));
        claimed
    }

    fn start(&self, task: &ClaimedTask, cancel: CancellationToken, leased_until: Instant) {
        lock(&self.inflight).insert(
            task.id,
            InFlight {
                token: task.lease_token,
                batch: task.batch_id,
                cancel,
                reporting: false,
                leased_until,
                lapsing: false,
            },
        );
    }

    /// A renewal sent before `leased_until - lease` was confirmed for `held`.
    pub(crate) fn renewed(&self, held: &[Claim], leased_until: Instant) {
        let mut inflight = lock(&self.inflight);
        for claim in held {
            if let Some(task) = inflight.get_mut(&claim.task)
                && task.token == claim.token
                && task.leased_until < leased_until
            {
                task.leased_until = leased_until;
            }
        }
    }

    /// Stops every attempt whose confirmed lease ends before `by`: once a lease lapses another
    /// worker may take the task and call it again, so an attempt must never outlive its lease,
    /// whatever keeps the renewal from landing (a slow commit, a database outage).
    pub(crate) fn stop_lapsing(&self, by: Instant) {
        for (id, task) in lock(&self.inflight).iter_mut() {
            if task.leased_until <= by && !task.reporting && !task.lapsing {
                tracing::warn!(
                    task = id.0,
                    "no lease renewal confirmed in time; stopping the attempt before its lease lapses"
                );
                task.lapsing = true;
                task.cancel.cancel();
            }
        }
    }

    /// Whether the attempt under `claim` was stopped by [`Shared::stop_lapsing`].
    pub(crate) fn is_lapsing(&self, claim: Claim) -> bool {
        lock(&self.inflight)
            .get(&claim.task)
            .is_some_and(|task| task.token == claim.token && task.lapsing)
    }

    /// A batch was interrupted or cancelled: give back its tasks claimed ahead, and abort its
    /// running ones if the worker is set to.
    pub(crate) fn batch_stopped(self: &Arc<Self>, batch: BatchId) {
        if !lock(&self.stopped_batches).insert(batch) {
            return;
        }
        tracing::info!(
            batch = batch.0,
            "batch stopped; its tasks are no longer started here"
        );
        let unstarted: Vec<Buffered> = {
            let mut buffer = lock(&self.buffer);
            let (stopped, kept): (Vec<Buffered>, Vec<Buffered>) =
                buffer.drain(..).partition(|b| b.task.batch_id == batch);
            buffer.extend(kept);
            stopped
        };
        if !unstarted.is_empty() {
            let release = self.release(unstarted);
            lock(&self.releases).push(tokio::spawn(release));
        }
        if self.options.on_interrupt == OnInterrupt::Abort {
            for task in lock(&self.inflight).values() {
                if task.batch == batch && !task.reporting {
                    task.cancel.cancel();
                }
            }
        }
    }

    /// Another process stopped the batch of in-flight task `id` (found by lease renewal).
    pub(crate) fn task_batch_stopped(self: &Arc<Self>, id: TaskId) {
        let batch = lock(&self.inflight).get(&id).map(|task| task.batch);
        if let Some(batch) = batch {
            self.batch_stopped(batch);
        }
    }

    /// Whether a cancelled task of `batch` was cancelled to be given back (worker abort, or an
    /// interrupted batch under [`OnInterrupt::Abort`]) rather than because its lease was lost.
    pub(crate) fn gives_back(&self, batch: BatchId) -> bool {
        self.is_aborting()
            || (self.options.on_interrupt == OnInterrupt::Abort
                && lock(&self.stopped_batches).contains(&batch))
    }

    fn mark_reporting(&self, claim: Claim) {
        if let Some(task) = lock(&self.inflight).get_mut(&claim.task)
            && task.token == claim.token
        {
            task.reporting = true;
        }
    }

    /// The attempt under `claim` is over. A retried task may already be running again here
    /// under a newer claim; that entry is left alone.
    pub(crate) fn finish(&self, claim: Claim) {
        let mut inflight = lock(&self.inflight);
        if inflight
            .get(&claim.task)
            .is_some_and(|task| task.token == claim.token)
        {
            inflight.remove(&claim.task);
        }
    }

    /// Every claim this worker holds (running, claimed ahead, or reporting).
    pub(crate) fn inflight_claims(&self) -> Vec<Claim> {
        lock(&self.inflight)
            .iter()
            .map(|(id, task)| Claim {
                task: *id,
                token: task.token,
            })
            .collect()
    }

    fn inflight_is_empty(&self) -> bool {
        lock(&self.inflight).is_empty()
    }

    /// A renewal for `claim` found the task no longer leased to this worker. If the task runs
    /// here again under a newer claim (a retry claimed in the same commit), that is not a loss.
    pub(crate) fn lease_lost(&self, claim: Claim) {
        let id = claim.task;
        if let Some(task) = lock(&self.inflight).get(&id)
            && task.token == claim.token
            && !task.reporting
        {
            tracing::warn!(
                task = id.0,
                "lease renewal found the task taken over; cancelling it here"
            );
            task.cancel.cancel();
        }
    }

    fn cancel_all(&self) {
        for task in lock(&self.inflight).values() {
            task.cancel.cancel();
        }
    }

    pub(crate) fn note_retry(&self, at: Instant) {
        lock(&self.retries).push(Reverse(at));
    }

    fn next_retry(&self) -> Option<Instant> {
        lock(&self.retries).peek().map(|Reverse(at)| *at)
    }

    /// True (once per retry) when retries this worker scheduled have come due.
    fn retry_due(&self, now: Instant) -> bool {
        let mut retries = lock(&self.retries);
        let mut due = false;
        while retries.peek().is_some_and(|Reverse(at)| *at <= now) {
            retries.pop();
            due = true;
        }
        due
    }

    async fn settings(&self, batch: BatchId) -> BatchSettings {
        if let Some(settings) = lock(&self.batches).get(&batch) {
            return settings.clone();
        }
        let defaults = self.engine.options();
        let settings = match self.engine.batch(batch).await {
            Ok(b) => BatchSettings {
                retry: Arc::new(b.retry.unwrap_or_else(|| defaults.retry.clone())),
                criteria: b.criteria.unwrap_or_default().over(&defaults.criteria),
            },
            Err(error) => {
                tracing::warn!(%error, batch = batch.0, "could not read the batch's settings; using the engine's");
                BatchSettings {
                    retry: Arc::new(defaults.retry.clone()),
                    criteria: defaults.criteria.clone(),
                }
            }
        };
        lock(&self.batches).insert(batch, settings.clone());
        settings
    }

    pub(crate) async fn retry_policy(&self, batch: BatchId) -> Arc<RetryPolicy> {
        self.settings(batch).await.retry
    }

    /// The attempt timeout: the worker's, or the batch's `max_task_runtime_ms`, the shorter.
    pub(crate) async fn timeout_for(&self, batch: BatchId) -> Option<Duration> {
        let criteria = self.settings(batch).await.criteria;
        let from_batch = criteria.max_task_runtime_ms.map(Duration::from_millis);
        match (self.options.timeout, from_batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn count(&self, next: &Next) {
        let counter = match next {
            Next::Complete { .. } => &self.succeeded,
            Next::Fail => &self.failed,
            Next::Retry { .. } => &self.retried,
            Next::Release => &self.released,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The database failed for good: stop claiming and report it from `run`.
    fn fail(&self, error: Error) {
        tracing::error!(%error, "worker stopping: could not commit an outcome");
        lock(&self.fatal).get_or_insert(error);
        self.shutdown.stop.cancel();
    }

    fn has_fatal(&self) -> bool {
        lock(&self.fatal).is_some()
    }

    fn take_fatal(&self) -> Option<Error> {
        lock(&self.fatal).take()
    }

    fn run_report(&self) -> RunReport {
        RunReport {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::NewBatch;
    use crate::task::{NewTask, TaskStatus};

    #[tokio::test]
    async fn tasks_claimed_beyond_the_free_slots_go_back_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        let batch = engine.create_batch(NewBatch::new("extra", "t")).await.unwrap();
        let ids = engine
            .enqueue(batch.id, (0..3).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        let worker = engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("job", |_: u32, _| async { Ok::<_, TaskError>(()) });
        let shared = Arc::new(worker.into_shared().unwrap());
        let lane = shared.lanes[0].clone();
        // A claim that came back with three tasks for one free slot.
        let request = ClaimRequest {
            owner: shared.owner.clone(),
            types_json: lane.types_json.clone(),
            batch: Some(batch.id),
            max: 3,
            lease: Duration::from_secs(60),
            pause_key: Some(lane.key.clone()),
            shared: SharedLimits::default(),
            spent_rate: None,
        };
        let ClaimResult::Claimed(claimed) = engine.committer().claim(request, None).await.unwrap() else {
            panic!("claimed nothing");
        };
        assert_eq!(claimed.len(), 3);

        let kept = shared.keep_for(1, claimed, &lane);
        assert_eq!(kept.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[0]]);
        let releases: Vec<_> = lock(&shared.releases).drain(..).collect();
        for release in releases {
            release.await.unwrap();
        }
        for (id, status, attempt) in [
            (ids[0], TaskStatus::Running, 1),
            (ids[1], TaskStatus::Pending, 0),
            (ids[2], TaskStatus::Pending, 0),
        ] {
            let task = engine.task(id).await.unwrap();
            assert_eq!((task.status, task.attempt), (status, attempt), "task {}", id.0);
        }
        assert_eq!(shared.run_report().released, 2);
    }
}
