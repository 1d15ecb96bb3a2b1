//! The worker loop: wait for a free slot → pick a lane whose limits allow a call → claim up to
//! the free slots in one request → spawn an executor per task. Idle lanes sleep until new work
//! is announced, a retry comes due, or the poll interval passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchId;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handler::{Handler, typed};
use crate::interrupt::InterruptionCriteria;
use crate::lane::{Lane, Limits, Readiness};
use crate::limit::{AdaptiveConcurrency, Aimd, ConcurrencyPermit};
use crate::outcome::TaskError;
use crate::retry::RetryPolicy;
use crate::store::{ClaimRequest, ClaimResult, Next};
use crate::task::TaskId;
use crate::time::Millis;
use crate::{executor, lease};

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
            return Err(Error::invalid("lease", "must be at least 300 ms (it is renewed every third)"));
        }
        if self.poll_interval.is_zero() || self.rescue_interval.is_zero() {
            return Err(Error::invalid("poll_interval", "intervals must be longer than zero"));
        }
        if let Some(aimd) = self.adaptive {
            if !(aimd.decrease_factor > 0.0 && aimd.decrease_factor < 1.0) {
                return Err(Error::invalid("decrease_factor", "must be between 0 and 1 (exclusive)"));
            }
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
        self.abort.cancel();
        self.stop.cancel();
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
        let owner = format!("{}-{}-{:08x}", host_name(), std::process::id(), rand::random::<u32>());
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
        let keeper_stop = CancellationToken::new();
        let keeper = tokio::spawn(lease::keep(shared.clone(), keeper_stop.clone()));
        let mut executors = JoinSet::new();
        let result = drive(&shared, &mut executors, until_idle).await;
        if shared.is_aborting() {
            shared.cancel_all();
        }
        while executors.join_next().await.is_some() {}
        keeper_stop.cancel();
        let _ = keeper.await;
        result?;
        if let Some(error) = shared.take_fatal() {
            return Err(error);
        }
        Ok(shared.report())
    }

    fn into_shared(self) -> Result<Shared> {
        self.options.validate()?;
        if self.handlers.is_empty() {
            return Err(Error::invalid("handlers", "register at least one handler before running a worker"));
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
        Ok(Shared {
            all_types_json: serde_json::to_string(&all_types).unwrap_or_default(),
            concurrency: AdaptiveConcurrency::new(self.options.concurrency, self.options.adaptive),
            engine: self.engine,
            owner: self.owner,
            options: self.options,
            handlers: self.handlers,
            lanes,
            inflight: Mutex::new(HashMap::new()),
            batches: Mutex::new(HashMap::new()),
            next_retry: Mutex::new(None),
            shutdown: self.shutdown,
            fatal: Mutex::new(None),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            released: AtomicU64::new(0),
        })
    }
}

/// The main loop; returns when stopped, idle (if asked) or on a fatal error.
async fn drive(shared: &Arc<Shared>, executors: &mut JoinSet<()>, until_idle: bool) -> Result<()> {
    let mut next_lane = 0usize;
    loop {
        while executors.try_join_next().is_some() {}
        if shared.shutdown.is_requested() || shared.has_fatal() {
            return Ok(());
        }
        // Register for wake-ups before looking, so an enqueue between the look and the wait
        // is not missed.
        let wake = shared.engine.wake().notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        let permit = tokio::select! {
            permit = shared.concurrency.acquire() => permit,
            () = shared.shutdown.stop.cancelled() => return Ok(()),
        };
        let now = Instant::now();
        if shared.retry_due(now) {
            shared.lanes.iter().for_each(|lane| lane.wake());
        }
        match pick_lane(shared, now, &mut next_lane) {
            Pick::Lane(lane) => claim_and_spawn(shared, executors, lane, permit).await?,
            Pick::Wait { until, all_idle } => {
                drop(permit);
                if until_idle && all_idle && shared.inflight_is_empty() {
                    let batch = shared.options.batch;
                    if !shared.engine.store().has_work(&shared.all_types_json, batch).await? {
                        return Ok(());
                    }
                }
                let until = until.min(now + shared.options.poll_interval);
                let until = shared.next_retry().map_or(until, |retry| until.min(retry));
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = &mut wake => shared.lanes.iter().for_each(|lane| lane.wake()),
                    () = shared.shutdown.stop.cancelled() => return Ok(()),
                }
            }
        }
    }
}

enum Pick {
    Lane(Arc<Lane>),
    Wait { until: Instant, all_idle: bool },
}

/// Round-robin over lanes ready to claim; otherwise when the first one will be.
fn pick_lane(shared: &Shared, now: Instant, next: &mut usize) -> Pick {
    let count = shared.lanes.len();
    let mut soonest: Option<Instant> = None;
    let mut all_idle = true;
    for offset in 0..count {
        let index = (*next + offset) % count;
        match shared.lanes[index].readiness(now) {
            Readiness::Ready => {
                *next = index + 1;
                return Pick::Lane(shared.lanes[index].clone());
            }
            Readiness::Wait { until, idle } => {
                all_idle &= idle;
                soonest = Some(soonest.map_or(until, |s| s.min(until)));
            }
        }
    }
    Pick::Wait {
        until: soonest.unwrap_or(now + shared.options.poll_interval),
        all_idle,
    }
}

async fn claim_and_spawn(
    shared: &Arc<Shared>,
    executors: &mut JoinSet<()>,
    lane: Arc<Lane>,
    first: ConcurrencyPermit,
) -> Result<()> {
    let mut grants = Vec::new();
    if let Some(rate) = &lane.rate {
        match rate.try_acquire() {
            Some(grant) => grants.push(grant),
            None => return Ok(()), // another lane's claim used the moment; look again
        }
    }
    let mut permits = vec![first];
    // A weighted budget learns each task's cost only once claimed: claim one at a time.
    if lane.budget.is_none() {
        while permits.len() < shared.options.max_claim as usize {
            let Some(permit) = shared.concurrency.try_acquire() else { break };
            if let Some(rate) = &lane.rate {
                match rate.try_acquire() {
                    Some(grant) => grants.push(grant),
                    None => break,
                }
            }
            permits.push(permit);
        }
    }
    let request = ClaimRequest {
        owner: shared.owner.clone(),
        types_json: lane.types_json.clone(),
        batch: shared.options.batch,
        max: u32::try_from(permits.len()).unwrap_or(u32::MAX),
        lease: shared.options.lease,
        pause_key: Some(lane.key.clone()),
    };
    // Never cancelled midway: claimed rows must reach an executor or they sit leased until the
    // lease expires.
    let claimed = match shared.engine.committer().claim(request).await {
        Ok(ClaimResult::Claimed(tasks)) => tasks,
        Ok(ClaimResult::Paused { until }) => {
            refund(&lane, grants);
            lane.pause_until(instant_at(until));
            return Ok(());
        }
        Err(error) if error.is_transient() => {
            refund(&lane, grants);
            tracing::warn!(%error, "claim failed; retrying after the poll interval");
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
    let unused = grants.len().saturating_sub(claimed.len());
    refund(&lane, grants.split_off(grants.len() - unused));
    for (task, permit) in claimed.into_iter().zip(permits) {
        if let Some(budget) = &lane.budget {
            budget.spend(task.cost);
        }
        let cancel = shared.shutdown.abort.child_token();
        shared.start(task.id, cancel.clone());
        executors.spawn(executor::execute(shared.clone(), lane.clone(), task, permit, cancel));
    }
    Ok(())
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

#[derive(Debug)]
struct InFlight {
    cancel: CancellationToken,
    /// The outcome is on its way to the database; a renewal that misses it is not a lost lease.
    reporting: bool,
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
    batches: Mutex<HashMap<BatchId, BatchSettings>>,
    next_retry: Mutex<Option<Instant>>,
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

    fn start(&self, id: TaskId, cancel: CancellationToken) {
        lock(&self.inflight).insert(id, InFlight { cancel, reporting: false });
    }

    pub(crate) fn mark_reporting(&self, id: TaskId) {
        if let Some(task) = lock(&self.inflight).get_mut(&id) {
            task.reporting = true;
        }
    }

    pub(crate) fn finish(&self, id: TaskId) {
        lock(&self.inflight).remove(&id);
    }

    pub(crate) fn inflight_ids(&self) -> Vec<TaskId> {
        lock(&self.inflight).keys().copied().collect()
    }

    fn inflight_is_empty(&self) -> bool {
        lock(&self.inflight).is_empty()
    }

    pub(crate) fn lease_lost(&self, id: TaskId) {
        if let Some(task) = lock(&self.inflight).get(&id) {
            if !task.reporting {
                tracing::warn!(task = id.0, "lease renewal found the task taken over; cancelling it here");
                task.cancel.cancel();
            }
        }
    }

    fn cancel_all(&self) {
        for task in lock(&self.inflight).values() {
            task.cancel.cancel();
        }
    }

    pub(crate) fn note_retry(&self, at: Instant) {
        let mut next = lock(&self.next_retry);
        *next = Some(next.map_or(at, |n| n.min(at)));
    }

    fn next_retry(&self) -> Option<Instant> {
        *lock(&self.next_retry)
    }

    /// True (once) when the earliest retry this worker scheduled has come due.
    fn retry_due(&self, now: Instant) -> bool {
        let mut next = lock(&self.next_retry);
        if next.is_some_and(|at| at <= now) {
            *next = None;
            return true;
        }
        false
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

    pub(crate) fn count(&self, next: &Next) {
        let counter = match next {
            Next::Complete { .. } => &self.succeeded,
            Next::Fail => &self.failed,
            Next::Retry { .. } => &self.retried,
            Next::Release => &self.released,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The database failed for good: stop claiming and report it from `run`.
    pub(crate) fn fail(&self, error: Error) {
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

    fn report(&self) -> RunReport {
        RunReport {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
        }
    }
}
