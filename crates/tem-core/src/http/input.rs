//! Loading a JSONL input into a batch, exactly once whatever happens: the batch remembers the
//! input's fingerprint and task count, lines go in chunks that each commit atomically, and a
//! load cut short by a crash continues after the last committed line when run again.

use std::io::{BufRead, BufReader, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::call::lookup;
use super::request::{LineKind, RequestTemplate, StoredLine, origin, parse_line};
use crate::batch::{Batch, NewBatch};
use crate::engine::Engine;
use crate::error::Error;
use crate::interrupt::InterruptionCriteria;
use crate::retry::RetryPolicy;
use crate::task::NewTask;

/// The batch type and task type of HTTP batches.
pub const HTTP_KIND: &str = "http";

/// Lines committed per transaction while loading.
const CHUNK_LINES: usize = 5_000;

/// How many invalid lines a summary keeps the reasons of.
const INVALID_KEPT: usize = 20;

/// Where the JSONL comes from. Standard input is read into memory first, because loading reads
/// the input twice (once to fingerprint it, once to enqueue it).
#[derive(Clone, Debug)]
pub enum InputSource {
    File(PathBuf),
    Memory { name: String, bytes: Arc<[u8]> },
}

impl InputSource {
    /// The name the batch records and messages use.
    pub fn name(&self) -> String {
        match self {
            InputSource::File(path) => path.display().to_string(),
            InputSource::Memory { name, .. } => name.clone(),
        }
    }

    fn open(&self) -> Result<Box<dyn BufRead + Send>, LoadError> {
        match self {
            InputSource::File(path) => std::fs::File::open(path)
                .map(|file| Box::new(BufReader::with_capacity(1 << 16, file)) as Box<dyn BufRead + Send>)
                .map_err(|source| LoadError::Read {
                    input: self.name(),
                    source,
                }),
            InputSource::Memory { bytes, .. } => Ok(Box::new(Cursor::new(bytes.clone()))),
        }
    }

    /// Reads every non-blank line, in order, as `(line number, stored line)`.
    pub(super) fn for_each_line(
        &self,
        mut each: impl FnMut(StoredLine) -> Result<(), LoadError>,
    ) -> Result<(), LoadError> {
        let mut reader = self.open()?;
        let mut buffer = Vec::new();
        let mut number = 0u64;
        loop {
            buffer.clear();
            let read = reader
                .read_until(b'\n', &mut buffer)
                .map_err(|source| LoadError::Read {
                    input: self.name(),
                    source,
                })?;
            if read == 0 {
                return Ok(());
            }
            number += 1;
            let stored = match std::str::from_utf8(&buffer) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(number, text.trim()),
                Err(e) => StoredLine {
                    line: number,
                    kind: LineKind::Invalid(format!("(line): not UTF-8 text: {e}")),
                },
            };
            each(stored)?;
        }
    }
}

/// What an input holds, and the fingerprint a batch remembers it by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSummary {
    /// Where it was read from.
    pub name: String,
    /// Non-blank lines: one task each.
    pub tasks: u64,
    /// FNV-1a of the non-blank lines: the same input on a rerun, or another one.
    pub fingerprint: String,
    /// Lines that cannot become a request (their tasks fail with the reason).
    pub invalid: u64,
    /// The reasons of the first invalid lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid_reasons: Vec<String>,
}

/// How to create the batch when it is new.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Retry policy of a new batch.
    pub retry: Option<RetryPolicy>,
    /// Interruption criteria of a new batch.
    pub criteria: Option<InterruptionCriteria>,
    /// Dotted path of a number in each line (payload, or a request's body) that estimates the
    /// call's cost against a weighted budget, e.g. `max_tokens`.
    pub cost_field: Option<String>,
    /// The request template: a new batch remembers its shape, and a rerun must use the same.
    pub template: Option<RequestTemplate>,
}

/// What a batch remembers of its request template: enough to notice a rerun that would send
/// the remaining calls somewhere else or in another shape, nothing that could hold a secret
/// (header values and the base URL's query stay out; the body only as a fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestShape {
    pub origin: Option<String>,
    pub base_url: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub header_names: Vec<String>,
    pub body: Option<String>,
}

impl RequestShape {
    /// The shape of `template`.
    pub fn of(template: &RequestTemplate) -> Self {
        let hash = |text: &str| format!("fnv1a64:{:016x}", fnv1a(FNV_OFFSET, text.as_bytes()));
        let mut header_names: Vec<String> = template.headers.keys().map(|k| k.to_ascii_lowercase()).collect();
        header_names.sort();
        header_names.dedup();
        RequestShape {
            origin: template.base_url.as_deref().map(origin),
            base_url: template
                .base_url
                .as_deref()
                .map(|b| hash(b.trim_end_matches('/'))),
            method: template.method.as_deref().map(|m| m.trim().to_ascii_uppercase()),
            path: template.path.clone(),
            header_names,
            body: template.body.as_ref().map(|b| hash(&b.to_string())),
        }
    }

    /// The settings that differ from `other`.
    fn differences(&self, other: &RequestShape) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.base_url != other.base_url {
            fields.push("base_url");
        }
        if self.method != other.method {
            fields.push("method");
        }
        if self.path != other.path {
            fields.push("path");
        }
        if self.header_names != other.header_names {
            fields.push("headers");
        }
        if self.body != other.body {
            fields.push("body");
        }
        fields
    }
}

/// The batch an input went into.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub batch: Batch,
    pub input: InputSummary,
    /// Whether the batch already existed (a rerun).
    pub existed: bool,
    /// Lines enqueued by this load (all of them for a new batch, the rest after a cut-short
    /// load, none on a plain rerun).
    pub enqueued: u64,
}

/// Why an input could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {input}: {source}")]
    Read {
        input: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{input} holds no tasks (no non-blank lines)")]
    Empty { input: String },
    #[error(
        "batch `{code}` was loaded from a different input ({} tasks from {}, fingerprint {}); {} has \
         {} tasks, fingerprint {}. Run the same input to continue it, or give another --batch code",
        stored.tasks, stored.name, stored.fingerprint, given.name, given.tasks, given.fingerprint
    )]
    DifferentInput {
        code: String,
        stored: Box<InputSummary>,
        given: Box<InputSummary>,
    },
    #[error(
        "batch `{code}` was started with a different request ({} differ); continue it with the \
         same request settings, or give another --batch code to start a new batch",
        fields.join(", ")
    )]
    DifferentRequest { code: String, fields: Vec<&'static str> },
    #[error(
        "batch `{code}` holds {found} of its {expected} tasks: another process kept adding to it; run again"
    )]
    Incomplete { code: String, expected: u64, found: u64 },
    #[error("batch `{code}` is a `{kind}` batch, not one made by run-batch; give another --batch code")]
    NotHttp { code: String, kind: String },
    #[error(transparent)]
    Engine(#[from] Error),
}

/// Reads `source` once to count and fingerprint it.
pub fn summarize(source: &InputSource) -> Result<InputSummary, LoadError> {
    let mut hash = FNV_OFFSET;
    let mut summary = InputSummary {
        name: source.name(),
        tasks: 0,
        fingerprint: String::new(),
        invalid: 0,
        invalid_reasons: Vec::new(),
    };
    source.for_each_line(|stored| {
        summary.tasks += 1;
        // Hash what the line means, so a rerun with different line endings or blank lines is
        // still the same input.
        let text = serde_json::to_string(&stored.kind).unwrap_or_default();
        hash = fnv1a(hash, text.as_bytes());
        hash = fnv1a(hash, b"\n");
        if let LineKind::Invalid(reason) = &stored.kind {
            summary.invalid += 1;
            if summary.invalid_reasons.len() < INVALID_KEPT {
                summary
                    .invalid_reasons
                    .push(format!("line {}: {reason}", stored.line));
            }
        }
        Ok(())
    })?;
    summary.fingerprint = format!("fnv1a64:{hash:016x}");
    Ok(summary)
}

/// Creates batch `code` from `source`, or continues it when it exists with the same input.
pub async fn load(
    engine: &Engine,
    code: &str,
    source: &InputSource,
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let input = summarize(source)?;
    if input.tasks == 0 {
        return Err(LoadError::Empty { input: input.name });
    }
    let shape = options.template.as_ref().map(RequestShape::of);
    let (mut batch, existed) = match engine.find_batch(code).await? {
        Some(batch) => {
            check_same_input(&batch, &input, shape.as_ref())?;
            (batch, true)
        }
        None => {
            let metadata = serde_json::json!({ "input": &input, "request": &shape });
            let mut new = NewBatch::new(code, HTTP_KIND).metadata(metadata);
            new.retry = options.retry.clone();
            new.criteria = options.criteria.clone();
            match engine.create_batch(new).await {
                Ok(batch) => (batch, false),
                // Another process created it first: continue theirs.
                Err(Error::DuplicateBatch(_)) => {
                    let batch = engine.batch_by_code(code).await?;
                    check_same_input(&batch, &input, shape.as_ref())?;
                    (batch, true)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };

    let mut enqueued = 0u64;
    // A racing loader makes our expected count stale: start again from its progress, for as
    // long as it makes progress.
    let mut stalled = 0;
    loop {
        let already = u64::try_from(batch.stats.total).unwrap_or(0);
        if already >= input.tasks {
            break;
        }
        match enqueue_from(engine, &batch, source, already, input.tasks, options).await {
            Ok(added) => enqueued += added,
            Err(LoadError::Engine(Error::TotalChanged { .. })) => {}
            Err(e) => return Err(e),
        }
        let before = batch.stats.total;
        batch = engine.batch(batch.id).await?;
        stalled = if batch.stats.total > before {
            0
        } else {
            stalled + 1
        };
        if stalled >= 3 {
            break;
        }
    }
    let found = u64::try_from(batch.stats.total).unwrap_or(0);
    if found != input.tasks {
        return Err(LoadError::Incomplete {
            code: batch.code,
            expected: input.tasks,
            found,
        });
    }
    Ok(Loaded {
        batch,
        input,
        existed,
        enqueued,
    })
}

/// Enqueues lines `skip + 1 ..= tasks` (counting non-blank lines), a chunk per transaction.
/// Lines past `tasks` (appended since the input was fingerprinted) are not this batch's.
async fn enqueue_from(
    engine: &Engine,
    batch: &Batch,
    source: &InputSource,
    skip: u64,
    tasks: u64,
    options: &LoadOptions,
) -> Result<u64, LoadError> {
    // Reading is synchronous; hand chunks over a channel so the runtime keeps running.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewTask>>(2);
    let reader_source = source.clone();
    let cost_field = options.cost_field.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut seen = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK_LINES);
        reader_source.for_each_line(|stored| {
            seen += 1;
            if seen <= skip || seen > tasks {
                return Ok(());
            }
            chunk.push(task_for(&stored, cost_field.as_deref()));
            if chunk.len() == CHUNK_LINES && tx.blocking_send(std::mem::take(&mut chunk)).is_err() {
                // The loader stopped because an enqueue failed; that error is the one reported.
                return Err(LoadError::Read {
                    input: reader_source.name(),
                    source: std::io::Error::other("loading stopped"),
                });
            }
            Ok(())
        })?;
        if !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        Ok::<(), LoadError>(())
    });
    let mut total = i64::try_from(skip).unwrap_or(i64::MAX);
    let mut added = 0u64;
    while let Some(chunk) = rx.recv().await {
        let n = chunk.len();
        match engine.enqueue_at(batch.id, total, chunk).await {
            Ok(_) => {}
            // Another loader got there first. What this one added so far is still its own:
            // report it, and let the caller look at the batch again.
            Err(Error::TotalChanged { .. }) => {
                drop(rx);
                let _ = reader.await;
                return Ok(added);
            }
            Err(e) => return Err(e.into()),
        }
        total += i64::try_from(n).unwrap_or(i64::MAX);
        added += n as u64;
    }
    match reader.await {
        Ok(result) => result?,
        Err(join) => {
            return Err(LoadError::Read {
                input: source.name(),
                source: std::io::Error::other(join.to_string()),
            });
        }
    }
    Ok(added)
}

fn task_for(stored: &StoredLine, cost_field: Option<&str>) -> NewTask {
    // Serialising a StoredLine (strings and JSON values) cannot fail.
    let payload = serde_json::to_string(stored).unwrap_or_default();
    let mut task = NewTask::from_json(HTTP_KIND, payload);
    if let Some(field) = cost_field {
        let source = match &stored.kind {
            LineKind::Payload(payload) => Some(payload),
            LineKind::Request(request) => request.body.as_ref(),
            LineKind::Invalid(_) => None,
        };
        if let Some(cost) = source.and_then(|v| lookup(v, field)).and_then(cost_of) {
            // The database holds costs as i64; a larger estimate is as good as infinite.
            task = task.cost(cost.min(i64::MAX as u64));
        }
    }
    task
}

fn cost_of(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.ceil() as u64)
    })
}

fn check_same_input(
    batch: &Batch,
    input: &InputSummary,
    shape: Option<&RequestShape>,
) -> Result<(), LoadError> {
    if batch.kind != HTTP_KIND {
        return Err(LoadError::NotHttp {
            code: batch.code.clone(),
            kind: batch.kind.clone(),
        });
    }
    let stored: Option<InputSummary> = batch
        .metadata
        .as_ref()
        .and_then(|m| m.get("input"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let stored_shape: Option<RequestShape> = batch
        .metadata
        .as_ref()
        .and_then(|m| m.get("request"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if let (Some(stored_shape), Some(shape)) = (&stored_shape, shape) {
        let fields = stored_shape.differences(shape);
        if !fields.is_empty() {
            return Err(LoadError::DifferentRequest {
                code: batch.code.clone(),
                fields,
            });
        }
    }
    match stored {
        Some(stored) if stored.fingerprint == input.fingerprint && stored.tasks == input.tasks => Ok(()),
        stored => {
            let stored = stored.unwrap_or(InputSummary {
                name: "(unknown)".into(),
                tasks: 0,
                fingerprint: "(none)".into(),
                invalid: 0,
                invalid_reasons: Vec::new(),
            });
            Err(LoadError::DifferentInput {
                code: batch.code.clone(),
                stored: Box::new(stored),
                given: Box::new(input.clone()),
            })
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits: stable across versions and platforms (std's hasher is not).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(text: &str) -> InputSource {
        InputSource::Memory {
            name: "test".into(),
            bytes: text.as_bytes().into(),
        }
    }

    #[test]
    fn summaries_count_tasks_and_ignore_formatting() {
        let a = summarize(&memory("{\"id\": 1}\n\n{\"id\":2}\r\nnot json\n")).unwrap();
        assert_eq!((a.tasks, a.invalid), (3, 1));
        assert!(
            a.invalid_reasons[0].starts_with("line 4: (line): not valid JSON"),
            "{:?}",
            a.invalid_reasons
        );
        let b = summarize(&memory("{\"id\":1}\n{\"id\": 2}\n\nnot json")).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let c = summarize(&memory("{\"id\":1}\n{\"id\":3}\nnot json")).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn costs_come_from_the_named_field() {
        let task = task_for(
            &parse_line(1, r#"{"prompt": "hi", "max_tokens": 120.5}"#),
            Some("max_tokens"),
        );
        assert_eq!(task.cost, 121);
        let task = task_for(
            &parse_line(1, r#"{"path": "/x", "body": {"usage": {"n": 7}}}"#),
            Some("usage.n"),
        );
        assert_eq!(task.cost, 7);
        let task = task_for(&parse_line(1, r#"{"prompt": "hi"}"#), Some("max_tokens"));
        assert_eq!(task.cost, 1);
    }
}
