//! Running a batch of HTTP calls from a plan: open the database, load the input once, run a
//! worker with the plan's limits while the progress view follows the engine's events, stop
//! gracefully on the first Ctrl-C (abort on the second), then report and export.
//!
//! Whatever stops the process — Ctrl-C, a kill, a crash — rerunning the same command continues
//! the batch: the input is not loaded twice and a task that succeeded is never called again.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tem_core::http::{self, HttpHandler, InputSource, LoadError, LoadOptions};
use tem_core::{Batch, BatchStatus, Engine, EngineOptions, Event, Shutdown};

use crate::config;
use crate::plan::{Display, RunPlan};
use crate::progress::Progress;
use crate::rehearsal;
use crate::report_view;
use crate::say;
use crate::usage::UsageError;

/// What to run.
pub struct RunRequest {
    pub plan: RunPlan,
    /// The batch code.
    pub code: String,
    pub source: InputSource,
    /// Continue an interrupted batch instead of stopping with an explanation.
    pub resume: bool,
    /// Show this many requests and stop: nothing called, nothing written.
    pub dry_run: Option<usize>,
}

/// How a run ended, in the words of the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Every task succeeded.
    Succeeded,
    /// The batch finished with failed tasks.
    Failed,
    /// An interruption criterion (or someone, by hand) stopped the batch.
    Interrupted,
    /// Ctrl-C: the batch is unfinished and resumable.
    Stopped,
    /// The batch was cancelled.
    Cancelled,
}

impl Ending {
    fn name(self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Failed => "failed",
            Ending::Interrupted => "interrupted",
            Ending::Stopped => "stopped",
            Ending::Cancelled => "cancelled",
        }
    }

    fn exit_status(self) -> u8 {
        match self {
            Ending::Succeeded => 0,
            _ => 1,
        }
    }

    fn exit_code(self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

/// Runs `request` to its end; the exit status says how it went.
pub async fn run(request: RunRequest) -> anyhow::Result<ExitCode> {
    let RunRequest {
        plan,
        code,
        source,
        resume,
        dry_run,
    } = request;
    let rehearsal = rehearsal::check(&plan, &source, dry_run.unwrap_or(0))?;
    if let Some(show) = dry_run {
        return Ok(rehearsal::dry_run(&source, &rehearsal, show));
    }
    for (header, var) in plan.template.secret_names() {
        if std::env::var_os(&var).is_none() {
            crate::usage!(
                "header {header}: the environment variable `{var}` is not set; export it before running \
                 (its value is read at call time and never stored)"
            );
        }
    }
    let options = EngineOptions {
        retry: plan.retry.clone(),
        outage_tolerance: plan.outage_tolerance,
        ..EngineOptions::default()
    };
    let engine = match Engine::open_with(&plan.db.display().to_string(), options).await {
        Ok(engine) => engine,
        Err(tem_core::Error::DatabaseReadOnly(_)) => crate::usage!(
            "--db {}: the file is read-only, and a run records every call in it; make it writable              or give another --db (`tem batch show` still reads it)",
            config::shown_db(&plan.db)
        ),
        Err(e @ tem_core::Error::DatabaseFile { .. }) => crate::usage!("--db: {e}"),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("opening {}", config::shown_db(&plan.db))));
        }
    };
    let result = run_on(&engine, plan, &code, &source, resume).await;
    engine.close().await;
    result
}

async fn run_on(
    engine: &Engine,
    plan: RunPlan,
    code: &str,
    source: &InputSource,
    resume: bool,
) -> anyhow::Result<ExitCode> {
    let load_options = LoadOptions {
        retry: Some(plan.retry.clone()),
        criteria: Some(plan.criteria.clone()).filter(|c| !c.is_empty()),
        cost_field: plan.cost_field.clone(),
        template: Some(plan.template.clone()),
    };
    let loaded = http::load(engine, code, source, &load_options)
        .await
        .map_err(|e| match e {
            LoadError::DifferentInput { .. }
            | LoadError::DifferentRequest { .. }
            | LoadError::NotHttp { .. }
            | LoadError::Empty { .. } => anyhow::Error::new(UsageError(e.to_string())),
            other => anyhow::Error::new(other),
        })?;
    let human = plan.display == Display::Human;
    if human {
        let input = &loaded.input;
        if loaded.existed {
            eprintln!(
                "continuing batch `{code}` in {} ({} of {} tasks finished)",
                config::shown_db(&plan.db),
                loaded.batch.stats.finished(),
                loaded.batch.stats.total
            );
        } else {
            eprintln!(
                "batch `{code}`: {} tasks from {} into {}",
                input.tasks,
                input.name,
                config::shown_db(&plan.db)
            );
        }
    }
    if plan.display != Display::Json && loaded.input.invalid > 0 {
        for reason in &loaded.input.invalid_reasons {
            eprintln!("warning: {reason}");
        }
        let more = loaded.input.invalid - loaded.input.invalid_reasons.len() as u64;
        if more > 0 {
            eprintln!("warning: … and {more} more invalid lines");
        }
        eprintln!(
            "warning: {} invalid line(s) will be recorded as failed tasks; the other lines run",
            loaded.input.invalid
        );
    }

    if loaded.existed && plan.display != Display::Json {
        warn_about_kept_settings(&plan, &loaded.batch);
    }
    let batch = loaded.batch;
    match batch.status {
        BatchStatus::Interrupted if resume => {
            let resumed = engine.resume(batch.id).await?;
            if human {
                eprintln!("resumed: {} stranded task(s) requeued", resumed.requeued);
            }
        }
        BatchStatus::Interrupted => return finish(engine, &plan, &batch, Ending::Interrupted).await,
        BatchStatus::Cancelled => return finish(engine, &plan, &batch, Ending::Cancelled).await,
        BatchStatus::Completed => {
            if human {
                eprintln!("batch `{code}` had already finished; nothing to run");
            }
            let ending = if batch.stats.failed > 0 {
                Ending::Failed
            } else {
                Ending::Succeeded
            };
            return finish(engine, &plan, &batch, ending).await;
        }
        BatchStatus::Active => {
            // Tasks whose worker died (lease expired) go back now rather than at the next rescue.
            engine.resume(batch.id).await?;
        }
    }

    let handler = HttpHandler::new(plan.template.clone(), plan.http.clone())?;
    let mut worker = engine
        .worker(plan.worker.clone().batch(batch.id))
        .handler(http::HTTP_KIND, handler);
    if plan.limits != tem_core::Limits::default() {
        worker = worker.limit(http::HTTP_KIND, plan.limits);
    }
    let shutdown = worker.shutdown_handle();

    let progress = Arc::new(Mutex::new(Progress::new(plan.display, code)));
    let events = engine.events();
    let follower = tokio::spawn(follow(events, batch.id, progress.clone()));
    let stats = engine.batch(batch.id).await?.stats;
    if let Ok(mut view) = progress.lock() {
        view.update(&stats);
    }
    let worker_done = Arc::new(AtomicBool::new(false));
    let signals = tokio::spawn(on_signals(
        shutdown.clone(),
        progress.clone(),
        worker_done.clone(),
    ));

    let outcome = worker.run_until_idle().await;
    // From here on a Ctrl-C just ends the process: everything is committed, and the output
    // file is only ever renamed into place complete.
    worker_done.store(true, Ordering::SeqCst);
    follower.abort();
    let outcome = outcome.map_err(|error| {
        if is_outage(&error) {
            anyhow::anyhow!("{error}; run the same command again to continue once the database is back")
        } else {
            anyhow::Error::from(error)
        }
    });
    let result = match outcome {
        Ok(_) => after_run(engine, &plan, batch.id, &progress).await,
        Err(e) => Err(e),
    };
    signals.abort();
    result
}

async fn after_run(
    engine: &Engine,
    plan: &RunPlan,
    batch: tem_core::BatchId,
    progress: &Arc<Mutex<Progress>>,
) -> anyhow::Result<ExitCode> {
    let batch = engine.batch(batch).await?;
    if let Ok(mut view) = progress.lock() {
        view.finish(&batch.stats);
    }
    let ending = match batch.status {
        BatchStatus::Interrupted => Ending::Interrupted,
        BatchStatus::Cancelled => Ending::Cancelled,
        BatchStatus::Completed if batch.stats.failed == 0 => Ending::Succeeded,
        BatchStatus::Completed => Ending::Failed,
        BatchStatus::Active => Ending::Stopped,
    };
    finish(engine, plan, &batch, ending).await
}

/// A rerun keeps the retry policy and criteria the batch was created with; say so when this
/// run asked for others, rather than ignore them silently.
fn warn_about_kept_settings(plan: &RunPlan, batch: &Batch) {
    if batch.retry.as_ref().is_some_and(|kept| *kept != plan.retry) {
        eprintln!(
            "note: batch `{}` keeps the retry policy it was created with; --max-attempts, --backoff \
             and --backoff-max of this run do not apply to it",
            batch.code
        );
    }
    let kept = batch.criteria.clone().unwrap_or_default();
    if kept != plan.criteria {
        eprintln!(
            "note: batch `{}` keeps the interruption criteria it was created with; the --max-* \
             settings of this run do not apply to it",
            batch.code
        );
    }
}

/// Feeds the engine's progress events for `batch` to the view.
async fn follow(
    mut events: tokio::sync::broadcast::Receiver<Event>,
    batch: tem_core::BatchId,
    progress: Arc<Mutex<Progress>>,
) {
    loop {
        match events.recv().await {
            Ok(Event::Progress(p)) if p.batch_id == batch => {
                if let Ok(mut view) = progress.lock() {
                    view.update(&p.stats);
                }
            }
            Ok(Event::DatabaseUnavailable {
                error,
                gives_up_at_ms,
                ..
            }) => {
                let left = Duration::from_millis(
                    u64::try_from(gives_up_at_ms - tem_core::time::now_ms()).unwrap_or(0),
                );
                let line = format!(
                    "waiting for the database: {error}\n  retrying for up to {}; calls in flight go on, nothing finished is lost",
                    humantime::format_duration(round_secs(left))
                );
                if let Ok(mut view) = progress.lock() {
                    view.waiting("waiting for the database".to_owned(), &line);
                }
            }
            Ok(Event::DatabaseRecovered { after }) => {
                let line = format!("the database answers again (after {:.1}s)", after.as_secs_f64());
                if let Ok(mut view) = progress.lock() {
                    view.resumed(&line);
                }
            }
            Ok(_) => {}
            // Every event carries full counters: the next one catches the view up.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The run gave up on a database that stopped answering (its work is safe and resumable).
fn is_outage(error: &tem_core::Error) -> bool {
    match error {
        tem_core::Error::DatabaseOutage { .. } => true,
        tem_core::Error::Commit(inner) => is_outage(inner),
        _ => false,
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// First Ctrl-C (or SIGTERM): drain. Second: abort. Once the worker is done (reporting,
/// exporting): exit at once with 130, as a shell expects of an interrupted command.
async fn on_signals(shutdown: Shutdown, progress: Arc<Mutex<Progress>>, worker_done: Arc<AtomicBool>) {
    let note = |line: &str| {
        if let Ok(view) = progress.lock() {
            view.note(line);
        }
    };
    let mut signals = 0;
    while stop_signal().await.is_ok() {
        signals += 1;
        if worker_done.load(Ordering::SeqCst) {
            note("interrupted; every finished call is recorded, and --output is written only whole");
            std::process::exit(130);
        }
        if signals == 1 {
            shutdown.drain();
            note("stopping: no new calls; waiting for the ones in flight (Ctrl-C again to abort them)");
        } else {
            shutdown.abort();
            note("aborting: in-flight calls are cancelled and will run again on the next run");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Reports, exports, and explains how to go on.
async fn finish(engine: &Engine, plan: &RunPlan, batch: &Batch, ending: Ending) -> anyhow::Result<ExitCode> {
    let report = engine.report(batch.id, tem_core::DEFAULT_TOP_ERRORS).await?;
    if let Some(path) = &plan.output {
        let written = export_to(engine, batch, path).await?;
        if plan.display == Display::Human {
            eprintln!("wrote {written} result lines to {}", path.display());
        }
    }
    let code = &batch.code;
    let db = config::shown_db(&plan.db);
    let advice = match ending {
        Ending::Succeeded => String::new(),
        Ending::Failed => format!(
            "{} task(s) failed. See why: tem batch show {code} --db {db}; run them again: \
             tem batch retry-failed {code} --db {db}, then rerun this command",
            batch.stats.failed
        ),
        Ending::Interrupted => {
            let why = batch
                .interruption
                .as_ref()
                .map(|i| format!("{}: {}", i.reason, i.message))
                .unwrap_or_else(|| "interrupted".into());
            format!(
                "batch `{code}` was interrupted ({why}). To continue: rerun this command with --resume \
                 (or tem batch resume {code} --db {db})"
            )
        }
        Ending::Stopped => format!(
            "stopped with {} task(s) left; rerun the same command to continue",
            batch.stats.pending + batch.stats.running
        ),
        Ending::Cancelled => format!("batch `{code}` was cancelled; its pending tasks will not run"),
    };
    match plan.display {
        Display::Json => {
            let document = json!({
                "outcome": ending.name(),
                "exit_code": ending.exit_status(),
                "advice": Some(advice).filter(|a| !a.is_empty()),
                "report": report,
            });
            say!("{}", serde_json::to_string_pretty(&document)?);
        }
        Display::Human => {
            say!("{}", report_view::render(&report));
            if !advice.is_empty() {
                eprintln!("{advice}");
            }
        }
        Display::Quiet => {
            if !advice.is_empty() {
                eprintln!("{advice}");
            }
        }
    }
    Ok(ending.exit_code())
}

/// Writes every task's result line to `path`, through a temporary file beside it that is
/// renamed into place when complete: a crash never leaves half a file under the final name, and
/// a failure removes the temporary file.
pub async fn export_to(engine: &Engine, batch: &Batch, path: &std::path::Path) -> anyhow::Result<u64> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(temp);
    let written = http::export(engine, batch.id, |line| {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")
    })
    .await?;
    let temp = out.into_inner().map_err(|e| e.into_error())?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .with_context(|| format!("moving the results to {}", path.display()))?;
    Ok(written)
}
