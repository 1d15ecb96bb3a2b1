//! One stream: its configuration, its bytes (in memory or in a segment file), the state that
//! appends check, and the tail that live readers watch.
//!
//! Appends take the stream's lock, check and write, and release it; in the file store they
//! then wait for a group `fdatasync` before they are acknowledged. Readers never see bytes
//! that are not yet durable: the *visible* tail (a `watch` channel, which also wakes every
//! long-poll and SSE reader) moves only after the sync, while the *written* end under the lock
//! is what the next append's checks see.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::content_type::Kind;
use crate::error::StreamError;
use crate::json;
use crate::offset::{Offset, ReadFrom};
use crate::producer::{ProducerState, ProducerTuple, Verdict};
use crate::store::file::group_sync::{Failure, GroupSync, Pending};
use crate::store::file::segment::{Flush, Record, Segment};
use crate::ttl::Lifetime;

/// The visible end of a stream: what readers may see and wait on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    pub offset: Offset,
    pub closed: bool,
}

/// Where a fork's inherited data comes from.
#[derive(Debug)]
pub struct ForkOf {
    pub source: Arc<Stream>,
    /// The fork offset: source bytes before it are the fork's, later ones are not.
    pub at: u64,
    /// The sub-offset the fork was created with (0 when absent), kept to judge re-creates.
    pub sub_offset: u64,
}

/// What a stream was created with.
#[derive(Debug)]
pub struct StreamConfig {
    pub content_type: String,
    pub kind: Kind,
    pub lifetime: Lifetime,
    pub fork: Option<ForkOf>,
}

/// Where a stream's own bytes live.
#[derive(Debug)]
pub enum Body {
    Memory(Vec<u8>),
    File(Segment),
}

/// State replayed from storage when a stream is reopened.
#[derive(Debug, Default)]
pub struct Replayed {
    pub end: u64,
    pub closed: bool,
    pub closed_by: Option<ProducerTuple>,
    pub last_seq: Option<String>,
    pub producers: HashMap<String, ProducerState>,
    pub message_ends: Vec<u64>,
    pub last_write_ms: u64,
}

impl Replayed {
    /// Applies one stored record, as a reopen replays it.
    pub fn apply(&mut self, record: &Record) {
        for len in &record.message_lens {
            self.end += u64::from(*len);
            self.message_ends.push(self.end);
        }
        if let Some(producer) = &record.producer {
            self.producers.insert(producer.id.clone(), producer.state());
        }
        if record.closes {
            self.closed = true;
            self.closed_by = record.producer.clone();
        }
        if record.seq.is_some() {
            self.last_seq = record.seq.clone();
        }
        self.last_write_ms = self.last_write_ms.max(record.written_at_ms);
    }
}

#[derive(Debug)]
struct State {
    /// Written end: includes appends still waiting for their sync.
    end: u64,
    closed: bool,
    closed_by: Option<ProducerTuple>,
    last_seq: Option<String>,
    producers: HashMap<String, ProducerState>,
    /// End offset of each of this stream's own messages.
    message_ends: Vec<u64>,
    body: Body,
    /// How to take back each file-backed append not yet known durable, oldest first.
    undo: VecDeque<Undo>,
}

/// What one append changed, to restore if a failed sync undoes it.
#[derive(Debug)]
struct Undo {
    /// The segment's length once this append's record was in it.
    written: u64,
    end: u64,
    messages: usize,
    closed: bool,
    /// The values before, where this append changed them.
    closed_by: Option<Option<ProducerTuple>>,
    last_seq: Option<Option<String>>,
    producer: Option<(String, Option<ProducerState>)>,
}

/// An append as the HTTP layer hands it over (already checked for presence of type and body).
#[derive(Debug, Default)]
pub struct AppendRequest {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub close: bool,
    pub seq: Option<String>,
    pub producer: Option<ProducerTuple>,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub next: Offset,
    pub closed: bool,
    /// `(epoch, seq)` to echo: the accepted tuple, or the highest accepted for a duplicate.
    pub producer: Option<(u64, u64)>,
    /// The append repeated one already written; nothing was written now.
    pub duplicate: bool,
}

/// A range of a stream, as stored (JSON messages still comma-terminated).
#[derive(Debug)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub start: Offset,
    pub next: Offset,
    /// The chunk reaches the visible tail.
    pub up_to_date: bool,
    /// ... and that tail is the stream's final one.
    pub closed: bool,
}

/// A stream.
#[derive(Debug)]
pub struct Stream {
    /// Unique for the life of the store (a re-created path gets a new id).
    pub id: u64,
    pub path: String,
    pub config: StreamConfig,
    pub created_ms: u64,
    last_access_ms: AtomicU64,
    state: Mutex<State>,
    tail: watch::Sender<Tail>,
    sync: Option<Arc<GroupSync>>,
    /// Deleted (or expired) while forks still read it: 410 to clients, data kept for forks.
    soft_deleted: AtomicBool,
    /// Live forks that read this stream's data.
    forks: AtomicUsize,
}

impl Stream {
    /// A stream whose own bytes are `body`, in the state `replayed` from storage.
    pub fn open(
        id: u64,
        path: String,
        config: StreamConfig,
        body: Body,
        replayed: Replayed,
        created_ms: u64,
    ) -> Stream {
        let base = config.fork.as_ref().map_or(0, |fork| fork.at);
        let end = base + replayed.end;
        let message_ends = replayed.message_ends.iter().map(|e| base + e).collect();
        let sync = match &body {
            Body::File(segment) => Some(Arc::new(GroupSync::new(segment.written()))),
            Body::Memory(_) => None,
        };
        let tail = Tail {
            offset: Offset(end),
            closed: replayed.closed,
        };
        Stream {
            id,
            path,
            config,
            created_ms,
            last_access_ms: AtomicU64::new(replayed.last_write_ms.max(created_ms)),
            state: Mutex::new(State {
                end,
                closed: replayed.closed,
                closed_by: replayed.closed_by,
                last_seq: replayed.last_seq,
                producers: replayed.producers,
                message_ends,
                body,
                undo: VecDeque::new(),
            }),
            tail: watch::Sender::new(tail),
            sync,
            soft_deleted: AtomicBool::new(false),
            forks: AtomicUsize::new(0),
        }
    }

    /// Whether the stream was deleted while forks still need it.
    pub fn is_soft_deleted(&self) -> bool {
        self.soft_deleted.load(Ordering::Acquire)
    }

    /// Marks the stream deleted-but-kept (the store's lifecycle lock is held).
    pub fn set_soft_deleted(&self) {
        self.soft_deleted.store(true, Ordering::Release);
    }

    /// How many forks read this stream.
    pub fn fork_count(&self) -> usize {
        self.forks.load(Ordering::Acquire)
    }

    /// Counts a fork in (`true`) or out; returns the new count.
    pub fn count_fork(&self, added: bool) -> usize {
        if added {
            self.forks.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.forks.fetch_sub(1, Ordering::AcqRel).saturating_sub(1)
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that is still consistent (every mutation
        // is a single assignment after the I/O succeeded), so a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where this stream's own bytes start (the fork offset; 0 for a plain stream).
    pub fn base(&self) -> u64 {
        self.config.fork.as_ref().map_or(0, |fork| fork.at)
    }

    /// How many group `fdatasync`s made this stream's appends durable (0 in memory).
    pub fn syncs(&self) -> u64 {
        self.sync.as_ref().map_or(0, |sync| sync.syncs())
    }

    /// The visible tail.
    pub fn tail(&self) -> Tail {
        *self.tail.borrow()
    }

    /// A receiver that wakes whenever the visible tail moves or the stream closes.
    pub fn watch(&self) -> watch::Receiver<Tail> {
        self.tail.subscribe()
    }

    /// Live readers (long-poll and SSE) waiting on this stream right now.
    pub fn live_readers(&self) -> usize {
        self.tail.receiver_count()
    }

    /// Last GET or POST (or write before a restart), in Unix ms.
    pub fn last_access_ms(&self) -> u64 {
        self.last_access_ms.load(Ordering::Relaxed)
    }

    /// Renews the sliding TTL.
    pub fn touch(&self, now_ms: u64) {
        self.last_access_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Whether the stream's lifetime has run out at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.config.lifetime.expired(self.last_access_ms(), now_ms)
    }

    /// Appends, applying the protocol's checks in its order; acknowledged only once durable.
    pub async fn append(
        self: &Arc<Self>,
        request: AppendRequest,
        now_ms: u64,
    ) -> Result<Appended, StreamError> {
        let (appended, durable_at, generation) = self.write(request, now_ms)?;
        self.make_durable(durable_at, generation).await?;
        Ok(appended)
    }

    /// The checks and the write, under the lock. Returns the outcome, the file length that
    /// must be durable before it is acknowledged, and the generation it was written in.
    fn write(&self, request: AppendRequest, now_ms: u64) -> Result<(Appended, u64, u64), StreamError> {
        let mut state = self.lock();
        let generation = match &self.sync {
            Some(sync) => {
                if let Some(failure) = sync.broken() {
                    // An earlier failure could not be undone: try again before writing more.
                    let durable = sync.durable();
                    self.cut_back_locked(&mut state, durable, &failure)
                        .map_err(|error| storage_error(&self.path, "cutting back", &error))?;
                }
                let durable = sync.durable();
                while state.undo.front().is_some_and(|undo| undo.written <= durable) {
                    state.undo.pop_front();
                }
                sync.generation()
            }
            None => 0,
        };
        let (appended, pos) = self.write_checked(&mut state, request, now_ms)?;
        Ok((appended, pos, generation))
    }

    fn write_checked(
        &self,
        state: &mut State,
        request: AppendRequest,
        now_ms: u64,
    ) -> Result<(Appended, u64), StreamError> {
        let written = |state: &State| match &state.body {
            Body::File(segment) => segment.written(),
            Body::Memory(_) => 0,
        };
        let close_only = request.body.is_empty();
        if state.closed {
            if let Some(producer) = &request.producer {
                if let Some(known) = state.producers.get(&producer.id)
                    && producer.epoch < known.epoch
                {
                    return Err(StreamError::StaleEpoch {
                        current: known.epoch,
                        received: producer.epoch,
                    });
                }
                if state.closed_by.as_ref() == Some(producer) {
                    let appended = Appended {
                        next: Offset(state.end),
                        closed: true,
                        producer: Some((producer.epoch, producer.seq)),
                        duplicate: true,
                    };
                    return Ok((appended, written(state)));
                }
            }
            if close_only && request.producer.is_none() {
                let appended = Appended {
                    next: Offset(state.end),
                    closed: true,
                    producer: None,
                    duplicate: true,
                };
                return Ok((appended, written(state)));
            }
            return Err(StreamError::Closed {
                tail: Offset(state.end),
            });
        }
        let type_matches = |sent: &str| crate::content_type::same(sent, &self.config.content_type);
        if !close_only && !request.content_type.as_deref().is_some_and(type_matches) {
            return Err(StreamError::conflict(
                "content-type",
                format!("the stream's content type is {}", self.config.content_type),
            ));
        }
        let messages = match (close_only, self.config.kind) {
            (true, _) => Vec::new(),
            (false, Kind::Json) => json::messages(&request.body, false)?,
            (false, _) => vec![request.body],
        };
        if let Some(producer) = &request.producer
            && let Verdict::Duplicate { highest } =
                producer.check(state.producers.get(&producer.id).copied())?
        {
            let known_epoch = state
                .producers
                .get(&producer.id)
                .map_or(producer.epoch, |p| p.epoch);
            let appended = Appended {
                next: Offset(state.end),
                closed: state.closed,
                producer: Some((known_epoch, highest)),
                duplicate: true,
            };
            return Ok((appended, written(state)));
        }
        if let (Some(seq), Some(last)) = (&request.seq, &state.last_seq)
            && seq.as_bytes() <= last.as_bytes()
        {
            return Err(StreamError::conflict(
                crate::headers::STREAM_SEQ,
                format!("Stream-Seq {seq:?} is not greater than the last one, {last:?}"),
            ));
        }
        let record = Record {
            closes: request.close,
            producer: request.producer.clone(),
            seq: request.seq.clone(),
            written_at_ms: now_ms,
            message_lens: messages.iter().map(|m| m.len() as u32).collect(),
            data: messages.concat(),
        };
        let start = state.end;
        let base = self.base();
        let mut undo = Undo {
            written: 0,
            end: state.end,
            messages: state.message_ends.len(),
            closed: state.closed,
            closed_by: None,
            last_seq: None,
            producer: None,
        };
        let file_backed = match &mut state.body {
            Body::Memory(bytes) => {
                bytes.extend_from_slice(&record.data);
                false
            }
            Body::File(segment) => {
                segment.append(&record, start - base);
                undo.written = segment.written();
                true
            }
        };
        for len in &record.message_lens {
            state.end += u64::from(*len);
            let end = state.end;
            state.message_ends.push(end);
        }
        if let Some(producer) = request.producer {
            let before = state.producers.insert(producer.id.clone(), producer.state());
            if file_backed {
                undo.producer = Some((producer.id.clone(), before));
            }
            if request.close {
                let before = state.closed_by.replace(producer);
                undo.closed_by = Some(before);
            }
        }
        if request.seq.is_some() {
            let before = std::mem::replace(&mut state.last_seq, request.seq);
            undo.last_seq = Some(before);
        }
        state.closed |= request.close;
        if file_backed {
            state.undo.push_back(undo);
        }
        let appended = Appended {
            next: Offset(state.end),
            closed: state.closed,
            producer: record.producer.as_ref().map(|p| (p.epoch, p.seq)),
            duplicate: false,
        };
        if self.sync.is_none() {
            self.publish(Tail {
                offset: Offset(state.end),
                closed: state.closed,
            });
        }
        Ok((appended, written(state)))
    }

    /// Waits until the segment is durable up to `pos` (the sync makes what it covers visible).
    async fn make_durable(self: &Arc<Self>, pos: u64, generation: u64) -> Result<(), StreamError> {
        let Some(sync) = &self.sync else {
            return Ok(());
        };
        sync.sync_to(pos, generation, self)
            .await
            .map_err(|error| storage_error(&self.path, "appending to", &error))
    }

    /// Takes back every append past file length `durable` — their records, messages, producer
    /// and `Stream-Seq` changes, closure — and cuts the segment back to it; then starts the
    /// sync's next generation, all under the stream's lock.
    fn cut_back_locked(&self, state: &mut State, durable: u64, failure: &Failure) -> std::io::Result<()> {
        let (Body::File(segment), Some(sync)) = (&mut state.body, &self.sync) else {
            return Ok(());
        };
        segment.cut_back(durable)?;
        while let Some(undo) = state.undo.pop_back() {
            if undo.written <= durable {
                state.undo.push_back(undo);
                break;
            }
            state.end = undo.end;
            state.message_ends.truncate(undo.messages);
            state.closed = undo.closed;
            if let Some(closed_by) = undo.closed_by {
                state.closed_by = closed_by;
            }
            if let Some(last_seq) = undo.last_seq {
                state.last_seq = last_seq;
            }
            if let Some((id, before)) = undo.producer {
                match before {
                    Some(before) => state.producers.insert(id, before),
                    None => state.producers.remove(&id),
                };
            }
        }
        sync.restart(failure);
        Ok(())
    }

    fn publish(&self, tail: Tail) {
        self.tail.send_if_modified(|current| {
            let moves = tail.offset > current.offset || (tail.closed && !current.closed);
            if moves {
                *current = tail;
            }
            moves
        });
    }

    /// Reads from `from`, at most about `max` bytes (whole messages for JSON and text).
    pub fn read(&self, from: ReadFrom, max: usize) -> Result<Chunk, StreamError> {
        let tail = self.tail();
        let start = from.position(tail.offset.0);
        let end = self.chunk_end(start, tail.offset.0, max);
        let mut data = Vec::with_capacity((end - start) as usize);
        self.collect(start, end, &mut data)?;
        let up_to_date = end == tail.offset.0;
        Ok(Chunk {
            data,
            start: Offset(start),
            next: Offset(end),
            up_to_date,
            closed: up_to_date && tail.closed,
        })
    }

    /// Appends the stored bytes `[from, to)` — inherited ones from the fork's source — to `out`.
    pub fn collect(&self, from: u64, to: u64, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut from = from;
        if let Some(fork) = &self.config.fork
            && from < fork.at
        {
            let inherited_end = to.min(fork.at);
            fork.source.collect(from, inherited_end, out)?;
            from = inherited_end;
        }
        if from >= to {
            return Ok(());
        }
        let base = self.base();
        let plan = {
            let state = self.lock();
            match &state.body {
                Body::Memory(bytes) => {
                    out.extend_from_slice(&bytes[(from - base) as usize..(to - base) as usize]);
                    return Ok(());
                }
                Body::File(segment) => segment.plan(from - base, to - base),
            }
        };
        plan.read_into(out)
            .map_err(|error| StreamError::Storage(format!("reading {}: {error}", self.path)))
    }

    /// Where a read from `start` ends: the tail, or — past `max` bytes — the last whole
    /// message that fits (at least one), so JSON stays parseable and text stays UTF-8.
    fn chunk_end(&self, start: u64, tail: u64, max: usize) -> u64 {
        let limit = start.saturating_add(max as u64);
        if tail <= limit {
            return tail;
        }
        if self.config.kind == Kind::Binary {
            return limit;
        }
        self.last_boundary_in(start, limit)
            .or_else(|| self.first_boundary_after(start))
            .unwrap_or(tail)
            .min(tail)
    }

    /// The last message end in `(lo, hi]`, across the fork chain.
    fn last_boundary_in(&self, lo: u64, hi: u64) -> Option<u64> {
        let own = {
            let state = self.lock();
            let ends = &state.message_ends;
            let index = ends.partition_point(|end| *end <= hi);
            (index > 0 && ends[index - 1] > lo).then(|| ends[index - 1])
        };
        own.or_else(|| {
            let fork = self.config.fork.as_ref()?;
            if fork.at > lo && fork.at <= hi {
                Some(fork.at)
            } else {
                fork.source.last_boundary_in(lo, hi.min(fork.at))
            }
        })
    }

    /// The first message end after `lo`, across the fork chain.
    pub fn first_boundary_after(&self, lo: u64) -> Option<u64> {
        if let Some(fork) = &self.config.fork
            && lo < fork.at
        {
            return fork
                .source
                .first_boundary_after(lo)
                .filter(|end| *end <= fork.at)
                .or(Some(fork.at));
        }
        let state = self.lock();
        let index = state.message_ends.partition_point(|end| *end <= lo);
        state.message_ends.get(index).copied()
    }

    /// The stored bytes of a read, as the client receives them (JSON as one array).
    pub fn render(&self, stored: Vec<u8>) -> Vec<u8> {
        match self.config.kind {
            Kind::Json => json::array(&stored),
            _ => stored,
        }
    }
}

impl Pending for Stream {
    type Mark = Tail;

    fn take(&self) -> Option<(Flush, u64, Tail)> {
        let mut state = self.lock();
        let tail = Tail {
            offset: Offset(state.end),
            closed: state.closed,
        };
        match &mut state.body {
            Body::File(segment) => Some((segment.take_pending(), segment.written(), tail)),
            // Only file-backed streams have a group sync.
            Body::Memory(_) => None,
        }
    }

    fn publish(&self, tail: Tail) {
        Stream::publish(self, tail);
    }

    fn cut_back(&self, durable: u64, failure: &Failure) -> std::io::Result<()> {
        let mut state = self.lock();
        self.cut_back_locked(&mut state, durable, failure)
    }
}

/// A failed file operation as the client hears it: 507 while the disk is full, else 500.
pub fn storage_error(path: &str, doing: &str, error: &std::io::Error) -> StreamError {
    let message = format!("{doing} {path}: {error}");
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StreamError::InsufficientStorage(message)
        }
        _ => StreamError::Storage(message),
    }
}
