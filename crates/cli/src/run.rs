//! Running a batch of HTTP calls from a plan: open the database, load the input once, run a
//! worker with the plan's limits while the progress view follows the engine's events, stop
//! gracefully on the first Ctrl-C (abort on the second), then report and export.
//!
//! Whatever stops the process — Ctrl-C, a kill, a crash — rerunning the same command continues
//! the batch: the input is not loaded twice and a task that succeeded is never called again.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::json;
use tem_core::http::{self, HttpHandler, InputSource, LoadError, LoadOptions};
use tem_core::{Batch, BatchStatus, Engine, EngineOptions, Event, Shutdown};

use crate::plan::{Display, RunPlan};
use crate::progress::Progress;
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

    fn exit_code(self) -> ExitCode {
        match self {
            Ending::Succeeded => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        }
    }
}

/// Runs `request` to its end; the exit status says how it went.
pub async fn run(request: RunRequest) -> anyhow::Result<ExitCode> {
    let RunRequest {
        plan,
        code,
        source,
        resume,
    } = request;
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
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(&plan.db.display().to_string(), options)
        .await
        .with_context(|| format!("opening {}", plan.db.display()))?;
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
    };
    let loaded = http::load(engine, code, source, &load_options)
        .await
        .map_err(|e| match e {
            LoadError::DifferentInput { .. } | LoadError::NotHttp { .. } | LoadError::Empty { .. } => {
                anyhow::Error::new(UsageError(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })?;
    let human = plan.display == Display::Human;
    if human {
        let input = &loaded.input;
        if loaded.existed {
            eprintln!(
                "continuing batch `{code}` in {} ({} of {} tasks finished)",
                plan.db.display(),
                loaded.batch.stats.finished(),
                loaded.batch.stats.total
            );
        } else {
            eprintln!(
                "batch `{code}`: {} tasks from {} into {}",
                input.tasks,
                input.name,
                plan.db.display()
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

    let mut batch = loaded.batch;
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
    let signals = tokio::spawn(on_signals(shutdown.clone(), progress.clone()));

    let outcome = worker.run_until_idle().await;
    signals.abort();
    follower.abort();
    outcome?;

    batch = engine.batch(batch.id).await?;
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
    finish(engine, &plan, &batch, ending).await
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
            Ok(_) => {}
            // Every event carries full counters: the next one catches the view up.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// First Ctrl-C (or SIGTERM): drain. Second: abort.
async fn on_signals(shutdown: Shutdown, progress: Arc<Mutex<Progress>>) {
    let note = |line: &str| {
        if let Ok(view) = progress.lock() {
            view.note(line);
        }
    };
    if stop_signal().await.is_err() {
        return;
    }
    shutdown.drain();
    note("stopping: no new calls; waiting for the ones in flight (Ctrl-C again to abort them)");
    if stop_signal().await.is_err() {
        return;
    }
    shutdown.abort();
    note("aborting: in-flight calls are cancelled and will run again on the next run");
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
    let db = plan.db.display();
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
            let document = json!({ "outcome": ending.name(), "report": report });
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

/// Writes every task's result line to `path` (through a temporary file, so a crash never
/// leaves half a file under the final name).
pub async fn export_to(engine: &Engine, batch: &Batch, path: &std::path::Path) -> anyhow::Result<u64> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let temp = tempfile_in(dir, path)?;
    let file = std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = http::export(engine, batch.id, |line| {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")
    })
    .await?;
    out.flush()?;
    out.get_ref().sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("moving the results to {}", path.display()))?;
    Ok(written)
}

fn tempfile_in(dir: &std::path::Path, path: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results.jsonl".into());
    Ok(dir.join(format!(".{name}.{}.partial", std::process::id())))
}
