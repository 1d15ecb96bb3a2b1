//! Group commit: concurrent appends to one segment share one `fdatasync`.
//!
//! Appenders write their record into the segment's pending bytes, then wait here until it is
//! durable. One sync loop per segment runs while anyone waits: it takes everything pending,
//! writes it with one `pwrite`, syncs, publishes the new durable tail and wakes — once each —
//! the waiters that covers; then, if anyone wrote meanwhile, it goes round again at once. So
//! the disk is kept busy back to back under load, each sync covers every append that arrived
//! during the previous one, and no appender waits for another to be scheduled just to start
//! the next sync.
//!
//! The loop runs on the blocking pool, except for a lone appender, which syncs on its own
//! thread (see [`write_inline`]) and hands the loop over only if others arrived meanwhile.
//!
//! A failed write or sync undoes everything not yet durable. After an I/O error the kernel may
//! have dropped the dirty pages, and a later sync could succeed without them — so the pass that
//! failed has the stream cut its segment back to the durable length (and sync that) before it
//! answers anyone, and starts a new *generation*: the appends it undid, and any written before
//! the cut, are refused, and nothing they wrote can become durable; appends after the cut go on
//! as before, once the disk takes writes again. If the cut itself fails the segment is *broken*
//! and takes nothing until a later append's cut succeeds.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::segment::Flush;

/// Why appends were not made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The I/O error's kind (`StorageFull` for a full disk).
    pub kind: io::ErrorKind,
    pub message: String,
}

impl Failure {
    fn from_io(error: &io::Error) -> Failure {
        Failure {
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    fn other(message: impl Into<String>) -> Failure {
        Failure {
            kind: io::ErrorKind::Other,
            message: message.into(),
        }
    }

    /// As an I/O error, for the appender.
    pub fn to_io(&self) -> io::Error {
        io::Error::new(self.kind, self.message.clone())
    }
}

/// What the sync loop needs from the stream it makes durable.
pub trait Pending: Send + Sync + 'static {
    /// What a sync makes visible once it is done (the stream's new tail).
    type Mark: Send + 'static;
    /// Takes the bytes appended but not yet written: the write to make, the file length it
    /// reaches, and what that length means; `None` if there is no file to write.
    fn take(&self) -> Option<(Flush, u64, Self::Mark)>;
    /// Called once `mark`'s bytes are durable, before their appenders are woken.
    fn publish(&self, mark: Self::Mark);
    /// After a failed pass: undo every append past `durable`, cut the segment back to it, and —
    /// under the lock appends are written under — call [`GroupSync::restart`].
    fn cut_back(&self, durable: u64, failure: &Failure) -> io::Result<()>;
}

/// The durable length of one segment file, and the waiters for more.
#[derive(Debug)]
pub struct GroupSync {
    state: Mutex<State>,
    syncs: AtomicU64,
    /// `state.durable`, readable without the lock.
    durable: AtomicU64,
    /// Bumped by every cut back; an append belongs to the generation it was written in.
    generation: AtomicU64,
    /// `state.broken.is_some()`, readable without the lock on every append.
    is_broken: AtomicBool,
}

#[derive(Debug)]
struct State {
    durable: u64,
    /// A sync loop is running (or a lone appender is syncing).
    syncing: bool,
    /// Why the segment takes nothing until it is cut back.
    broken: Option<Failure>,
    /// For each generation that ended: the durable length it was cut back to, and why.
    cuts: Vec<(u64, Failure)>,
    waiting: Vec<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    pos: u64,
    woken: oneshot::Sender<Result<(), Failure>>,
}

impl GroupSync {
    /// A segment whose first `durable` bytes are already on disk.
    pub fn new(durable: u64) -> GroupSync {
        GroupSync {
            state: Mutex::new(State {
                durable,
                syncing: false,
                broken: None,
                cuts: Vec::new(),
                waiting: Vec::new(),
            }),
            syncs: AtomicU64::new(0),
            durable: AtomicU64::new(durable),
            generation: AtomicU64::new(0),
            is_broken: AtomicBool::new(false),
        }
    }

    /// How many `fdatasync`s this segment has had since it was opened.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The file length known durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The generation appends written now belong to (read under the stream's lock).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why the segment takes nothing until it is cut back, if it is broken.
    pub fn broken(&self) -> Option<Failure> {
        if !self.is_broken.load(Ordering::Acquire) {
            return None;
        }
        self.lock().broken.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a single assignment or push: a panic elsewhere cannot tear the state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new generation once the stream has cut its segment back to the durable length
    /// (called under the stream's lock): everyone still waiting is refused with `failure`.
    pub fn restart(&self, failure: &Failure) {
        let mut state = self.lock();
        let cut_at = state.durable;
        state.cuts.push((cut_at, failure.clone()));
        state.broken = None;
        self.is_broken.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        for waiter in std::mem::take(&mut state.waiting) {
            let _ = waiter.woken.send(Err(failure.clone()));
        }
    }

    /// Returns once the file is durable up to `pos`, which `source` was given in `generation`.
    pub async fn sync_to<P: Pending>(
        self: &Arc<Self>,
        pos: u64,
        generation: u64,
        source: &Arc<P>,
    ) -> io::Result<()> {
        let (receiver, start_loop) = {
            let mut state = self.lock();
            if let Some((cut_at, failure)) = state.cuts.get(generation as usize) {
                // Written before a cut: durable only if it lay below it.
                return if pos <= *cut_at {
                    Ok(())
                } else {
                    Err(failure.to_io())
                };
            }
            if let Some(failure) = &state.broken {
                return Err(failure.to_io());
            }
            if state.durable >= pos {
                return Ok(());
            }
            let start_loop = !state.syncing;
            state.syncing = true;
            if start_loop && can_write_inline() {
                // Alone: sync on this thread, then hand the loop on if anyone arrived meanwhile.
                drop(state);
                let pass = Pass::new(self.clone(), source.clone());
                let outcome = tokio::task::block_in_place(|| pass.run());
                if outcome.go_on {
                    let mut state = self.lock();
                    if state.waiting.is_empty() {
                        state.syncing = false;
                    } else {
                        drop(state);
                        self.spawn_loop(source.clone());
                    }
                }
                return outcome.result.map_err(|failure| failure.to_io());
            }
            let (sender, receiver) = oneshot::channel();
            state.waiting.push(Waiter { pos, woken: sender });
            (receiver, start_loop)
        };
        if start_loop {
            self.spawn_loop(source.clone());
        }
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(failure.to_io()),
            Err(_) => Err(io::Error::other(
                "the segment's sync loop ended without an answer",
            )),
        }
    }

    /// Runs passes on the blocking pool (on a thread of its own outside a runtime) until no
    /// one waits.
    fn spawn_loop<P: Pending>(self: &Arc<Self>, source: Arc<P>) {
        let unstarted = Unstarted {
            group: self.clone(),
            started: false,
        };
        let work = move || {
            let mut unstarted = unstarted;
            unstarted.started = true;
            let group = unstarted.group.clone();
            drop(unstarted);
            loop {
                {
                    let mut state = group.lock();
                    if state.waiting.is_empty() || state.broken.is_some() {
                        state.syncing = false;
                        return;
                    }
                }
                if !Pass::new(group.clone(), source.clone()).run().go_on {
                    return;
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(work)),
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("streams-sync".to_owned())
                    .spawn(work);
                if let Err(error) = spawned {
                    tracing::error!(%error, "could not start a sync thread");
                }
            }
        }
    }

    /// Gives the loop's role back without a pass and answers everyone waiting with `reason`.
    /// Nothing was taken, so nothing is broken: the next appender starts a loop that syncs it.
    fn abandon(&self, reason: &str) {
        let mut state = self.lock();
        state.syncing = false;
        for waiter in std::mem::take(&mut state.waiting) {
            let _ = waiter.woken.send(Err(Failure::other(reason)));
        }
    }

    /// Ends a pass that made the file durable up to `written`, and wakes every waiter that
    /// covers. The loop's role stays taken; the loop gives it up when no one waits.
    fn finish(&self, written: u64) {
        let mut state = self.lock();
        state.durable = state.durable.max(written);
        let durable = state.durable;
        self.durable.store(durable, Ordering::Release);
        let waiting = std::mem::take(&mut state.waiting);
        for waiter in waiting {
            if waiter.pos <= durable {
                // A waiter that has gone away needs no answer.
                let _ = waiter.woken.send(Ok(()));
            } else {
                state.waiting.push(waiter);
            }
        }
    }

    /// Marks the segment broken — what follows its durable length is unknown and could not be
    /// cut — and refuses everyone waiting. The loop's role is given up.
    fn fail(&self, failure: Failure) {
        let mut state = self.lock();
        state.syncing = false;
        for waiter in std::mem::take(&mut state.waiting) {
            let _ = waiter.woken.send(Err(failure.clone()));
        }
        state.broken = Some(failure);
        self.is_broken.store(true, Ordering::Release);
    }
}

/// Whether a sync may block this thread: only on a multi-thread runtime, which moves the
/// worker's other tasks to another thread meanwhile. Handing the sync to another thread and back
/// costs two wake-ups — tens of µs on a VM, a fifth of what a lone writer waits for; under
/// load the loop on the blocking pool is already running, and that hand-off is not paid.
fn can_write_inline() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    Handle::try_current().is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// The loop's role between being taken and the loop starting. Dropped unstarted — a runtime
/// shutting down drops queued blocking work, a thread may fail to start — it gives the role
/// back, so the segment is never left waiting on a loop that will not run.
struct Unstarted {
    group: Arc<GroupSync>,
    started: bool,
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        if !self.started {
            self.group.abandon("the sync loop could not start");
        }
    }
}

/// What a pass did: whether the bytes it took are durable, and whether the loop may go on.
struct Outcome {
    result: Result<(), Failure>,
    go_on: bool,
}

/// One take–write–sync–publish pass. Dropped without finishing (a panic, or a runtime shutting
/// down before the loop ran), it breaks the segment: its bytes may have been taken and never
/// written, and a later sync must not vouch for them.
struct Pass<P: Pending> {
    group: Arc<GroupSync>,
    source: Arc<P>,
    finished: bool,
}

impl<P: Pending> Pass<P> {
    fn new(group: Arc<GroupSync>, source: Arc<P>) -> Pass<P> {
        Pass {
            group,
            source,
            finished: false,
        }
    }

    fn run(mut self) -> Outcome {
        let Some((flush, written, mark)) = self.source.take() else {
            self.finished = true;
            let failure = Failure::other("the stream has no file to sync");
            self.group.fail(failure.clone());
            return Outcome {
                result: Err(failure),
                go_on: false,
            };
        };
        let result = flush.write_and_sync();
        self.finished = true;
        match result {
            Ok(()) => {
                self.group.syncs.fetch_add(1, Ordering::Relaxed);
                self.source.publish(mark);
                self.group.finish(written);
                Outcome {
                    result: Ok(()),
                    go_on: true,
                }
            }
            Err(error) => {
                let failure = Failure::from_io(&error);
                match self.source.cut_back(self.group.durable(), &failure) {
                    Ok(()) => {
                        tracing::warn!(%error, "a write or sync failed; its appends were undone");
                        Outcome {
                            result: Err(failure),
                            go_on: true,
                        }
                    }
                    Err(cut) => {
                        tracing::error!(%error, %cut, "a write or sync failed and could not be undone");
                        let broken = Failure::other(format!(
                            "{error}; cutting the segment back then failed too ({cut}), so \
                             these appends may or may not be stored"
                        ));
                        self.group.fail(broken.clone());
                        Outcome {
                            result: Err(broken),
                            go_on: false,
                        }
                    }
                }
            }
        }
    }
}

impl<P: Pending> Drop for Pass<P> {
    fn drop(&mut self) {
        if !self.finished {
            self.group
                .fail(Failure::other("a sync was abandoned before it finished"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::disk::RealDisk;
    use crate::store::file::segment::{Record, Segment};

    /// A bare segment as the sync loop sees it; its published marks are counted. With a gate,
    /// the first pass waits for the test's signal before it takes anything.
    struct Source {
        segment: Mutex<Segment>,
        published: AtomicU64,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl Pending for Source {
        type Mark = u64;
        fn take(&self) -> Option<(Flush, u64, u64)> {
            let gate = self.gate.lock().expect("gate").take();
            if let Some(gate) = gate {
                gate.recv().expect("the test opens the gate");
            }
            let mut segment = self.segment.lock().expect("segment");
            let written = segment.written();
            Some((segment.take_pending(), written, written))
        }
        fn publish(&self, mark: u64) {
            self.published.fetch_max(mark, Ordering::Relaxed);
        }
        fn cut_back(&self, _durable: u64, _failure: &Failure) -> io::Result<()> {
            Err(io::Error::other("this source cannot cut back"))
        }
    }

    fn source(dir: &std::path::Path) -> Arc<Source> {
        Arc::new(Source {
            segment: Mutex::new(Segment::create(&RealDisk, &dir.join("s.seg")).expect("create")),
            published: AtomicU64::new(0),
            gate: Mutex::new(None),
        })
    }

    /// Appends a one-byte record; returns the length that must become durable.
    fn append(source: &Source, start: u64) -> u64 {
        let record = Record {
            message_lens: vec![1],
            data: vec![b'x'],
            ..Record::default()
        };
        let mut segment = source.segment.lock().expect("segment");
        segment.append(&record, start);
        segment.written()
    }

    async fn concurrent_appends(group: Arc<GroupSync>, source: Arc<Source>) {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (group, source) = (group.clone(), source.clone());
                tokio::spawn(async move {
                    let pos = append(&source, i);
                    group.sync_to(pos, 0, &source).await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("durable");
        }
        let written = source.segment.lock().expect("segment").written();
        assert_eq!(group.lock().durable, written);
        assert_eq!(source.published.load(Ordering::Relaxed), written);
        assert!((1..=64).contains(&group.syncs()), "{} syncs", group.syncs());
    }

    #[tokio::test]
    async fn appends_that_arrive_during_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (group, source) = (Arc::new(GroupSync::new(0)), source(dir.path()));
        let (open, gate) = std::sync::mpsc::channel();
        *source.gate.lock().expect("gate") = Some(gate);
        // On this current-thread runtime the loop runs on the blocking pool, where its first
        // pass waits at the gate while every append is written and queued behind it.
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (group, source) = (group.clone(), source.clone());
                tokio::spawn(async move {
                    let pos = append(&source, i);
                    group.sync_to(pos, 0, &source).await
                })
            })
            .collect();
        let mut turns = 0;
        while group.lock().waiting.len() < 64 {
            turns += 1;
            assert!(turns < 100_000, "the appends never all queued");
            tokio::task::yield_now().await;
        }
        open.send(()).expect("open the gate");
        for task in tasks {
            task.await.expect("join").expect("durable");
        }
        assert_eq!(group.syncs(), 1, "64 queued appends share one sync");
        let written = source.segment.lock().expect("segment").written();
        assert_eq!(group.lock().durable, written);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_all_return_durable_and_the_loop_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (group, source) = (Arc::new(GroupSync::new(0)), source(dir.path()));
        concurrent_appends(group.clone(), source).await;
        // The loop gives its role up once no one waits (it may be finishing its last check).
        for _ in 0..1000 {
            if !group.lock().syncing {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the sync loop never stopped");
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_the_loop_runs_on_the_blocking_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        concurrent_appends(Arc::new(GroupSync::new(0)), source(dir.path())).await;
    }

    #[test]
    fn a_loop_that_never_starts_gives_its_role_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (group, source) = (Arc::new(GroupSync::new(0)), source(dir.path()));
        let pos = append(&source, 0);
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = group.lock();
            state.syncing = true;
            state.waiting.push(Waiter { pos, woken: sender });
        }
        // What a runtime shutting down does to queued blocking work: drop it unrun.
        drop(Unstarted {
            group: group.clone(),
            started: false,
        });
        assert!(!group.lock().syncing, "the role is free again");
        let answer = receiver.blocking_recv().expect("answered");
        assert!(answer.is_err(), "the waiter hears why");
        assert!(
            group.lock().broken.is_none(),
            "nothing was taken, so nothing failed"
        );
    }

    #[test]
    fn outside_a_runtime_the_loop_runs_on_a_thread_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (group, source) = (Arc::new(GroupSync::new(0)), source(dir.path()));
        let pos = append(&source, 0);
        futures::executor::block_on(group.sync_to(pos, 0, &source)).expect("durable");
        assert_eq!(group.lock().durable, pos);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_segment_refuses_appends_and_a_cut_back_starts_a_new_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (group, source) = (Arc::new(GroupSync::new(0)), source(dir.path()));
        let pos = append(&source, 0);
        group.fail(Failure::other("EIO"));
        let error = group.sync_to(pos, 0, &source).await.expect_err("broken");
        assert!(error.to_string().contains("EIO"), "{error}");
        let full = Failure {
            kind: io::ErrorKind::StorageFull,
            message: "disk full".into(),
        };
        group.restart(&full);
        assert_eq!(group.generation(), 1);
        assert!(group.broken().is_none());
        // Written before the cut and past it: refused with the cut's reason, whatever follows.
        let error = group.sync_to(pos, 0, &source).await.expect_err("undone");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        // Written after it: synced as usual.
        group.sync_to(pos, 1, &source).await.expect("durable");
    }
}
