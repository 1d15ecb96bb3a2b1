//! Group commit: every write on the hot path (outcomes, claims, lease renewals, rescues) goes
//! through one background task that folds whatever has queued up into a single transaction.
//!
//! While one transaction is being fsynced, the next one's requests accumulate, so the batch size
//! adapts to the load by itself: one task at a time when idle, hundreds per commit when busy,
//! with no timer adding latency. A request is answered only after its transaction committed.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::batch::BatchId;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::outage::Outage;
use crate::store::{
    ClaimRequest, ClaimResult, CycleInput, CycleOutput, OutcomeRow, RenewRequest, Renewed, Store,
};

/// Most outcomes folded into one transaction; beyond that the next cycle takes the rest.
const MAX_OUTCOMES_PER_CYCLE: usize = 2048;
/// Scheduler turns a cycle waits for more requests, while they keep coming.
const MAX_YIELDS: usize = 8;

type Reply<T> = oneshot::Sender<Result<T, Arc<Error>>>;

/// Grows a claim to the capacity that is free when its transaction is assembled, rather than
/// what was free when the request was sent: tasks that finished in between count too.
pub(crate) trait TopUp: Send + Sync {
    /// Takes as much extra capacity as the claimer may use; returns how much it took.
    fn top_up(&self) -> u32;
}

enum Request {
    Outcome(OutcomeRow, Reply<bool>),
    Claim(ClaimRequest, Option<Arc<dyn TopUp>>, Reply<ClaimResult>),
    Renew(RenewRequest, Reply<Renewed>),
    Rescue(Reply<u64>),
    Check(Reply<Vec<BatchId>>),
}

/// Handle to the group-commit task.
#[derive(Clone, Debug)]
pub(crate) struct Committer {
    requests: mpsc::UnboundedSender<Request>,
    closing: CancellationToken,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Outcome(..) => "Outcome",
            Request::Claim(..) => "Claim",
            Request::Renew(..) => "Renew",
            Request::Rescue(..) => "Rescue",
            Request::Check(..) => "Check",
        })
    }
}

impl Committer {
    /// Starts the group-commit task; it ends when every handle is dropped or on [`Self::close`].
    pub fn spawn(
        store: Store,
        events: broadcast::Sender<Event>,
        outage: Arc<Outage>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let closing = CancellationToken::new();
        let task = tokio::spawn(run(store, receiver, events, outage, closing.clone()));
        (Committer { requests, closing }, task)
    }

    /// Stops accepting requests; those already queued are still committed.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Queues an outcome now; the returned future resolves once it is committed, `true` if
    /// the lease still held. Queueing before awaiting lets a caller free its slot in between,
    /// so the claim that slot triggers lands in the same transaction as this outcome.
    pub fn outcome(&self, row: OutcomeRow) -> impl std::future::Future<Output = Result<bool>> + use<> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(Request::Outcome(row, reply));
        async move {
            sent.map_err(|_| Error::Closed)?;
            Self::answer(answer).await
        }
    }

    /// Claims tasks; with `top_up`, as many more as the claimer can take when the claim runs.
    pub async fn claim(&self, request: ClaimRequest, top_up: Option<Arc<dyn TopUp>>) -> Result<ClaimResult> {
        self.call(|reply| Request::Claim(request, top_up, reply)).await
    }

    pub async fn renew(&self, request: RenewRequest) -> Result<Renewed> {
        self.call(|reply| Request::Renew(request, reply)).await
    }

    pub async fn rescue(&self) -> Result<u64> {
        self.call(Request::Rescue).await
    }

    /// Judges every active batch's interruption criteria; returns the batches it interrupted.
    pub async fn check(&self) -> Result<Vec<BatchId>> {
        self.call(Request::Check).await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(make(reply)).map_err(|_| Error::Closed)?;
        Self::answer(answer).await
    }

    async fn answer<T>(answer: oneshot::Receiver<Result<T, Arc<Error>>>) -> Result<T> {
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::Commit(error)),
            Err(_) => Err(Error::Closed),
        }
    }
}

async fn run(
    store: Store,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    events: broadcast::Sender<Event>,
    outage: Arc<Outage>,
    closing: CancellationToken,
) {
    let mut queued: Vec<Request> = Vec::new();
    let mut closed = false;

    loop {
        if queued.is_empty() {
            tokio::select! {
                request = receiver.recv() => match request {
                    Some(request) => queued.push(request),
                    None => break,
                },
                // After close(), recv() still yields what was sent before, then None.
                () = closing.cancelled(), if !closed => {
                    receiver.close();
                    closed = true;
                    continue;
                }
            }
        }
        // Take everything that arrived while the previous transaction was committing, then let
        // tasks that are already runnable (executors about to report) have their turn while
        // that keeps bringing requests: an fsync is the fixed cost of a cycle, worth sharing.
        drain(&mut receiver, &mut queued);
        for _ in 0..MAX_YIELDS {
            let before = queued.len();
            tokio::task::yield_now().await;
            drain(&mut receiver, &mut queued);
            if queued.len() == before {
                break;
            }
        }
        let take = cycle_size(&queued);
        let batch: Vec<Request> = queued.drain(..take).collect();
        let (input, replies) = split(batch);
        // Every write in a cycle is fenced by lease tokens and statuses, so a cycle whose commit
        // is in doubt (the connection dropped during COMMIT) is safe to run again.
        match outage.retry("commit", || store.run_cycle(&input)).await {
            Ok(output) => {
                for batch in &output.interrupted {
                    tracing::warn!(
                        batch = batch.0,
                        "batch interrupted: an interruption criterion was crossed"
                    );
                }
                for progress in &output.progress {
                    // No subscribers is fine.
                    let _ = events.send(Event::Progress(progress.clone()));
                }
                answer(replies, output);
            }
            Err(error) => {
                tracing::error!(%error, "group commit failed");
                let error = Arc::new(error);
                for reply in replies {
                    reply.fail(error.clone());
                }
            }
        }
    }
}

fn drain(receiver: &mut mpsc::UnboundedReceiver<Request>, queued: &mut Vec<Request>) {
    while let Ok(request) = receiver.try_recv() {
        queued.push(request);
    }
}

/// How many queued requests the next cycle takes: all, unless outcomes overflow one cycle.
fn cycle_size(queued: &[Request]) -> usize {
    let mut outcomes = 0;
    for (i, request) in queued.iter().enumerate() {
        if matches!(request, Request::Outcome(..)) {
            outcomes += 1;
            if outcomes > MAX_OUTCOMES_PER_CYCLE {
                return i;
            }
        }
    }
    queued.len()
}

enum Pending {
    Outcome(Reply<bool>),
    Claim(Reply<ClaimResult>),
    Renew(Reply<Renewed>),
    Rescue(Reply<u64>),
    Check(Reply<Vec<BatchId>>),
}

impl Pending {
    fn fail(self, error: Arc<Error>) {
        // A dropped receiver means the caller stopped waiting; nothing to tell.
        let _ = match self {
            Pending::Outcome(r) => r.send(Err(error)).is_ok(),
            Pending::Claim(r) => r.send(Err(error)).is_ok(),
            Pending::Renew(r) => r.send(Err(error)).is_ok(),
            Pending::Rescue(r) => r.send(Err(error)).is_ok(),
            Pending::Check(r) => r.send(Err(error)).is_ok(),
        };
    }
}

fn split(requests: Vec<Request>) -> (CycleInput, Vec<Pending>) {
    let mut input = CycleInput::default();
    let mut replies = Vec::with_capacity(requests.len());
    for request in requests {
        match request {
            Request::Outcome(row, reply) => {
                input.outcomes.push(row);
                replies.push(Pending::Outcome(reply));
            }
            Request::Claim(mut claim, top_up, reply) => {
                if let Some(top_up) = top_up {
                    claim.max += top_up.top_up();
                }
                input.claims.push(claim);
                replies.push(Pending::Claim(reply));
            }
            Request::Renew(renew, reply) => {
                input.renewals.push(renew);
                replies.push(Pending::Renew(reply));
            }
            Request::Rescue(reply) => {
                input.rescue = true;
                replies.push(Pending::Rescue(reply));
            }
            Request::Check(reply) => {
                input.check_all = true;
                replies.push(Pending::Check(reply));
            }
        }
    }
    (input, replies)
}

fn answer(replies: Vec<Pending>, output: CycleOutput) {
    let mut accepted = output.accepted.into_iter();
    let mut claims = output.claims.into_iter();
    let mut renewed = output.renewed.into_iter();
    for reply in replies {
        let _ = match reply {
            Pending::Outcome(r) => r.send(Ok(accepted.next().unwrap_or(false))).is_ok(),
            Pending::Claim(r) => r
                .send(Ok(claims.next().unwrap_or(ClaimResult::Claimed(Vec::new()))))
                .is_ok(),
            Pending::Renew(r) => r.send(Ok(renewed.next().unwrap_or_default())).is_ok(),
            Pending::Rescue(r) => r.send(Ok(output.rescued)).is_ok(),
            Pending::Check(r) => r.send(Ok(output.interrupted.clone())).is_ok(),
        };
    }
}
