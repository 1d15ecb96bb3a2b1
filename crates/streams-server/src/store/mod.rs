//! The store: every stream by path, and the lifecycle operations (create, fork, delete, expire)
//! that change which streams exist.
//!
//! Lookups and appends go straight to a stream; creates, deletes and expiries take one
//! lifecycle lock, so fork counts, soft deletes and the metadata database always agree. With a
//! data directory each stream is a segment file plus a row in a small SQLite database
//! ([`file`]); without one, bytes live in memory.

pub mod file;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::clock::Clock;
use crate::content_type::{self, Kind};
use crate::error::{Error, StreamError};
use crate::fork::{self, ForkRequest};
use crate::hooks::{LifecycleEvent, LifecycleHook, LifecycleKind};
use crate::json;
use crate::store::file::disk::{Disk, RealDisk};
use crate::store::file::segment::{Record, Segment};
use crate::store::file::{FileStore, Found};
use crate::stream::{Body, ForkOf, Replayed, Stream, StreamConfig, storage_error};
use crate::ttl::Lifetime;

/// A create (PUT) as the HTTP layer hands it over.
#[derive(Debug, Default)]
pub struct CreateRequest {
    /// The `Content-Type` header, verbatim, if sent.
    pub content_type: Option<String>,
    pub lifetime: Lifetime,
    /// `Stream-Closed: true`: the body is the stream's whole content.
    pub closed: bool,
    pub body: Vec<u8>,
    pub fork: Option<ForkRequest>,
}

/// The stream a create answered with, and whether it is new (201) or matched (200).
#[derive(Debug)]
pub struct Created {
    pub stream: Arc<Stream>,
    pub new: bool,
}

/// Every stream, by path.
pub struct Store {
    streams: RwLock<HashMap<String, Arc<Stream>>>,
    lifecycle: tokio::sync::Mutex<()>,
    files: Option<FileStore>,
    next_id: AtomicU64,
    hooks: Vec<LifecycleHook>,
    registry: Option<String>,
    /// Last access time written to the metadata database, per stream id.
    persisted_access: Mutex<HashMap<u64, u64>>,
    clock: Clock,
    /// Streams found on disk that cannot be opened without losing data, by path: why.
    unavailable: HashMap<String, String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("streams", &self.read_map().len())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store that keeps everything in memory.
    pub fn in_memory(hooks: Vec<LifecycleHook>, registry: Option<String>, clock: Clock) -> Store {
        Store::with_files(None, hooks, registry, clock)
    }

    /// Opens (creating if needed) the store in `dir`, recovering what a crash left.
    pub async fn open_dir(
        dir: &Path,
        hooks: Vec<LifecycleHook>,
        registry: Option<String>,
        clock: Clock,
    ) -> Result<Store, Error> {
        Store::open_dir_on(Arc::new(RealDisk), dir, hooks, registry, clock).await
    }

    /// [`Store::open_dir`] with segment files on `disk`.
    pub(crate) async fn open_dir_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        hooks: Vec<LifecycleHook>,
        registry: Option<String>,
        clock: Clock,
    ) -> Result<Store, Error> {
        let (files, found) = FileStore::open_on(disk, dir).await?;
        let mut store = Store::with_files(Some(files), hooks, registry, clock);
        let mut by_id: HashMap<u64, Arc<Stream>> = HashMap::new();
        let mut unavailable_ids = HashMap::new();
        let mut max_id = 0;
        for found in found {
            let found = match found {
                Found::Recovered(recovered) => *recovered,
                Found::Unavailable(row, reason) => {
                    max_id = max_id.max(row.id);
                    unavailable_ids.insert(row.id, row.path.clone());
                    store.unavailable.insert(row.path, reason);
                    continue;
                }
            };
            let row = found.row;
            max_id = max_id.max(row.id);
            let fork = match row.fork_source {
                Some(source_id) => match by_id.get(&source_id) {
                    Some(source) => Some(ForkOf {
                        source: source.clone(),
                        at: row.fork_at,
                        sub_offset: row.fork_sub_offset,
                    }),
                    None if unavailable_ids.contains_key(&source_id) => {
                        let reason = format!(
                            "it is a fork of {}, which is unavailable",
                            unavailable_ids[&source_id]
                        );
                        tracing::error!(stream = %row.path, %reason, "stream unavailable");
                        unavailable_ids.insert(row.id, row.path.clone());
                        store.unavailable.insert(row.path, reason);
                        continue;
                    }
                    None => {
                        tracing::warn!(path = %row.path, "dropping a fork whose source is gone");
                        if let Some(files) = &store.files {
                            files.remove(row.id).await?;
                        }
                        continue;
                    }
                },
                None => None,
            };
            let config = StreamConfig {
                kind: content_type::kind_of(&row.content_type),
                content_type: row.content_type.clone(),
                lifetime: row.lifetime(),
                fork,
            };
            let stream = Arc::new(Stream::open(
                row.id,
                row.path.clone(),
                config,
                Body::File(found.segment),
                found.replayed,
                row.created_ms,
            ));
            stream.touch(row.last_access_ms);
            if row.soft_deleted {
                stream.set_soft_deleted();
            }
            if let Some(fork) = &stream.config.fork {
                fork.source.count_fork(true);
            }
            store
                .persisted_access
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(row.id, row.last_access_ms);
            by_id.insert(row.id, stream.clone());
            store.write_map().insert(row.path, stream);
        }
        store.next_id.store(max_id + 1, Ordering::Relaxed);
        // Soft-deleted streams whose forks are gone, and streams that expired while the server
        // was down, go now.
        let orphans: Vec<_> = by_id
            .values()
            .filter(|s| s.is_soft_deleted() && s.fork_count() == 0)
            .cloned()
            .collect();
        {
            let _lifecycle = store.lifecycle.lock().await;
            for stream in orphans {
                store.remove_locked(&stream).await?;
            }
        }
        store.sweep().await;
        tracing::info!(dir = %dir.display(), streams = store.read_map().len(), "file store recovered");
        Ok(store)
    }

    fn with_files(
        files: Option<FileStore>,
        hooks: Vec<LifecycleHook>,
        registry: Option<String>,
        clock: Clock,
    ) -> Store {
        Store {
            streams: RwLock::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            files,
            next_id: AtomicU64::new(1),
            hooks,
            registry,
            persisted_access: Mutex::new(HashMap::new()),
            clock,
            unavailable: HashMap::new(),
        }
    }

    /// A 500 naming why the stream at `path` could not be opened, if it could not.
    fn refuse_unavailable(&self, path: &str) -> Result<(), StreamError> {
        match self.unavailable.get(path) {
            Some(reason) => Err(StreamError::Storage(format!(
                "stream {path} is unavailable: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Now, in Unix milliseconds, by the store's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether appends are made durable (a data directory) before they are acknowledged.
    pub fn is_durable(&self) -> bool {
        self.files.is_some()
    }

    /// The live stream at `path`: 404 if missing or expired, 410 if soft-deleted.
    pub async fn lookup(&self, path: &str) -> Result<Arc<Stream>, StreamError> {
        self.refuse_unavailable(path)?;
        let stream = self.read_map().get(path).cloned().ok_or(StreamError::NotFound)?;
        if stream.expired(self.now_ms()) {
            let _lifecycle = self.lifecycle.lock().await;
            return self.live_locked(path).await;
        }
        self.checked(stream)
    }

    /// [`Store::lookup`] for a caller that holds the lifecycle lock: expires the stream first if
    /// its time is up.
    async fn live_locked(&self, path: &str) -> Result<Arc<Stream>, StreamError> {
        self.refuse_unavailable(path)?;
        let stream = self.read_map().get(path).cloned().ok_or(StreamError::NotFound)?;
        if stream.expired(self.now_ms()) {
            self.expire_locked(&stream).await?;
        }
        self.checked(stream)
    }

    /// 410 for a soft-deleted stream, 404 for one no longer in the store.
    fn checked(&self, stream: Arc<Stream>) -> Result<Arc<Stream>, StreamError> {
        if stream.is_soft_deleted() {
            return Err(StreamError::Gone);
        }
        if !self.holds(&stream) {
            return Err(StreamError::NotFound);
        }
        Ok(stream)
    }

    fn holds(&self, stream: &Arc<Stream>) -> bool {
        self.read_map()
            .get(&stream.path)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
    }

    /// Creates a stream (or a fork), or matches an identical existing one.
    pub async fn create(&self, path: &str, request: CreateRequest) -> Result<Created, StreamError> {
        let _lifecycle = self.lifecycle.lock().await;
        let created = self.create_locked(path, request).await?;
        if created.new {
            self.announce(LifecycleKind::Created, &created.stream).await;
        }
        Ok(created)
    }

    async fn create_locked(&self, path: &str, request: CreateRequest) -> Result<Created, StreamError> {
        self.refuse_unavailable(path)?;
        let now = self.now_ms();
        let existing = self.read_map().get(path).cloned();
        if let Some(existing) = existing {
            if existing.expired(now) {
                self.expire_locked(&existing).await?;
            }
            if existing.is_soft_deleted() {
                return Err(StreamError::conflict(
                    "path",
                    "a deleted stream at this path is still read by its forks",
                ));
            }
            if self.holds(&existing) {
                return if same_config(&existing, &request) {
                    Ok(Created {
                        stream: existing,
                        new: false,
                    })
                } else {
                    Err(StreamError::conflict(
                        "path",
                        "a stream with a different configuration exists at this path",
                    ))
                };
            }
        }
        let (config, prefix) = match &request.fork {
            None => {
                let stored_type = content_type::stored_type(request.content_type.as_deref());
                (
                    StreamConfig {
                        kind: content_type::kind_of(&stored_type),
                        content_type: stored_type,
                        lifetime: request.lifetime.clone(),
                        fork: None,
                    },
                    Vec::new(),
                )
            }
            Some(fork_request) => self.fork_config(&request, fork_request).await?,
        };
        let mut records = Vec::new();
        if !prefix.is_empty() {
            records.push(Record {
                message_lens: prefix.iter().map(|m| m.len() as u32).collect(),
                data: prefix.concat(),
                written_at_ms: now,
                ..Record::default()
            });
        }
        let messages = match config.kind {
            Kind::Json if !request.body.is_empty() => json::messages(&request.body, true)?,
            _ if request.body.is_empty() => Vec::new(),
            _ => vec![request.body],
        };
        if !messages.is_empty() || request.closed {
            records.push(Record {
                closes: request.closed,
                message_lens: messages.iter().map(|m| m.len() as u32).collect(),
                data: messages.concat(),
                written_at_ms: now,
                ..Record::default()
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = match &self.files {
            None => Body::Memory(records.iter().flat_map(|r| r.data.iter().copied()).collect()),
            Some(files) => {
                let segment = files
                    .create_segment(id, &records)
                    .map_err(|error| storage_error(path, "creating", &error))?;
                Body::File(segment)
            }
        };
        let mut replayed = Replayed::default();
        for record in &records {
            replayed.apply(record);
        }
        let stream = Arc::new(Stream::open(id, path.to_owned(), config, body, replayed, now));
        if let Some(files) = &self.files
            && let Err(error) = files.insert(&stream).await
        {
            files.discard_segment(id);
            let message = format!("recording {path}: {error}");
            return Err(if error.is_disk_full() {
                StreamError::InsufficientStorage(message)
            } else {
                StreamError::Storage(message)
            });
        }
        if let Some(fork) = &stream.config.fork {
            fork.source.count_fork(true);
        }
        self.write_map().insert(path.to_owned(), stream.clone());
        Ok(Created { stream, new: true })
    }

    /// Checks a fork request against its source: the fork's configuration and copied prefix.
    async fn fork_config(
        &self,
        request: &CreateRequest,
        fork_request: &ForkRequest,
    ) -> Result<(StreamConfig, Vec<Vec<u8>>), StreamError> {
        let source = self
            .live_locked(&fork_request.from)
            .await
            .map_err(|error| match error {
                StreamError::Gone => StreamError::conflict(
                    crate::headers::STREAM_FORKED_FROM,
                    "the source stream was deleted",
                ),
                other => other,
            })?;
        let content_type = match &request.content_type {
            Some(sent) => {
                if !content_type::same(sent, &source.config.content_type) {
                    return Err(StreamError::conflict(
                        "content-type",
                        format!(
                            "a fork has its source's content type, {}",
                            source.config.content_type
                        ),
                    ));
                }
                content_type::stored_type(Some(sent))
            }
            None => source.config.content_type.clone(),
        };
        let point = fork::resolve(&source, fork_request)?;
        let lifetime = if request.lifetime == Lifetime::default() {
            source.config.lifetime.clone()
        } else {
            request.lifetime.clone()
        };
        let config = StreamConfig {
            kind: content_type::kind_of(&content_type),
            content_type,
            lifetime,
            fork: Some(ForkOf {
                source,
                at: point.at,
                sub_offset: fork_request.sub_offset,
            }),
        };
        Ok((config, point.prefix))
    }

    /// Deletes a stream: soft if forks still read it, else for good (and its sources with it,
    /// when they were only kept for this fork).
    pub async fn delete(&self, path: &str) -> Result<(), StreamError> {
        let stream = self.lookup(path).await?;
        let _lifecycle = self.lifecycle.lock().await;
        if stream.is_soft_deleted() || !self.holds(&stream) {
            return Err(if stream.is_soft_deleted() {
                StreamError::Gone
            } else {
                StreamError::NotFound
            });
        }
        self.retire_locked(&stream).await
    }

    /// Expires a stream whose lifetime ran out (the lifecycle lock is held).
    async fn expire_locked(&self, stream: &Arc<Stream>) -> Result<(), StreamError> {
        if !self.holds(stream) || stream.is_soft_deleted() || !stream.expired(self.now_ms()) {
            return Ok(());
        }
        tracing::debug!(path = %stream.path, "stream expired");
        self.retire_locked(stream).await
    }

    async fn retire_locked(&self, stream: &Arc<Stream>) -> Result<(), StreamError> {
        if stream.fork_count() > 0 {
            if let Some(files) = &self.files {
                files
                    .soft_delete(stream.id)
                    .await
                    .map_err(|error| StreamError::Storage(format!("deleting {}: {error}", stream.path)))?;
            }
            stream.set_soft_deleted();
            self.announce(LifecycleKind::Deleted, stream).await;
            return Ok(());
        }
        self.remove_locked(stream).await?;
        self.announce(LifecycleKind::Deleted, stream).await;
        Ok(())
    }

    /// Removes a stream for good, then any soft-deleted sources it was the last fork of.
    async fn remove_locked(&self, stream: &Arc<Stream>) -> Result<(), StreamError> {
        let mut next = Some(stream.clone());
        while let Some(stream) = next.take() {
            if let Some(files) = &self.files {
                files
                    .remove(stream.id)
                    .await
                    .map_err(|error| StreamError::Storage(format!("deleting {}: {error}", stream.path)))?;
            }
            {
                let mut map = self.write_map();
                if map.get(&stream.path).is_some_and(|s| Arc::ptr_eq(s, &stream)) {
                    map.remove(&stream.path);
                }
            }
            self.persisted_access
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&stream.id);
            if let Some(fork) = &stream.config.fork
                && fork.source.count_fork(false) == 0
                && fork.source.is_soft_deleted()
            {
                next = Some(fork.source.clone());
            }
        }
        Ok(())
    }

    /// Drops expired streams and writes changed access times of TTL streams to the metadata
    /// database (so a restart does not expire a stream that readers kept alive).
    pub async fn sweep(&self) {
        let now = self.now_ms();
        let streams: Vec<Arc<Stream>> = self.read_map().values().cloned().collect();
        let expired: Vec<_> = streams
            .iter()
            .filter(|s| !s.is_soft_deleted() && s.expired(now))
            .collect();
        if !expired.is_empty() {
            let _lifecycle = self.lifecycle.lock().await;
            for stream in expired {
                if let Err(error) = self.expire_locked(stream).await {
                    tracing::warn!(path = %stream.path, %error, "could not expire a stream");
                }
            }
        }
        let Some(files) = &self.files else { return };
        let changed: Vec<(u64, u64)> = {
            let mut persisted = self.persisted_access.lock().unwrap_or_else(|p| p.into_inner());
            streams
                .iter()
                .filter(|s| s.config.lifetime.ttl_secs.is_some())
                .filter_map(|s| {
                    let at = s.last_access_ms();
                    let known = persisted.entry(s.id).or_insert(0);
                    (at > *known).then(|| {
                        *known = at;
                        (s.id, at)
                    })
                })
                .collect()
        };
        if let Err(error) = files.record_access(&changed).await {
            tracing::warn!(%error, "could not record stream access times");
        }
    }

    /// Tells hooks and the registry stream about a create or delete.
    async fn announce(&self, kind: LifecycleKind, stream: &Stream) {
        if self.registry.as_deref() == Some(stream.path.as_str()) {
            return;
        }
        let event = LifecycleEvent {
            kind,
            path: stream.path.clone(),
            content_type: stream.config.content_type.clone(),
            timestamp: self.now_ms(),
        };
        for hook in &self.hooks {
            hook(&event);
        }
        if let Some(registry) = &self.registry
            && let Err(error) = self.record_in_registry(registry, &event).await
        {
            tracing::warn!(%error, "could not record a lifecycle event in the registry stream");
        }
    }

    async fn record_in_registry(&self, registry: &str, event: &LifecycleEvent) -> Result<(), StreamError> {
        let existing = self.read_map().get(registry).cloned();
        let stream = match existing {
            Some(stream) => stream,
            None => {
                let request = CreateRequest {
                    content_type: Some("application/json".into()),
                    ..CreateRequest::default()
                };
                Box::pin(self.create_locked(registry, request)).await?.stream
            }
        };
        let body = serde_json::to_vec(event).map_err(|error| StreamError::Storage(error.to_string()))?;
        let request = crate::stream::AppendRequest {
            content_type: Some("application/json".into()),
            body,
            ..Default::default()
        };
        stream.append(request, self.now_ms()).await.map(|_| ())
    }
}

/// Whether a re-create asks for exactly what exists (200) rather than something else (409).
fn same_config(existing: &Stream, request: &CreateRequest) -> bool {
    let closed_matches = existing.tail().closed == request.closed;
    match (&existing.config.fork, &request.fork) {
        (None, None) => {
            let wanted = content_type::stored_type(request.content_type.as_deref());
            content_type::same(&wanted, &existing.config.content_type)
                && existing.config.lifetime.same_as(&request.lifetime)
                && closed_matches
        }
        (Some(fork), Some(wanted)) => {
            let type_matches = request
                .content_type
                .as_deref()
                .is_none_or(|sent| content_type::same(sent, &existing.config.content_type));
            let lifetime = if request.lifetime == Lifetime::default() {
                &fork.source.config.lifetime
            } else {
                &request.lifetime
            };
            type_matches
                && existing.config.lifetime.same_as(lifetime)
                && closed_matches
                && fork.source.path == wanted.from
                && wanted.offset.is_none_or(|offset| offset.0 == fork.at)
                && fork.sub_offset == wanted.sub_offset
        }
        _ => false,
    }
}

/// A new segment's first records, for a store that creates streams on disk.
pub(crate) fn write_records(segment: &mut Segment, records: &[Record]) {
    let mut start = 0;
    for record in records {
        segment.append(record, start);
        start += record.data.len() as u64;
    }
}
