//! `tem batch …`: inspect and steer the batches in a database. None of these creates a
//! database: a wrong `--db` is an error, not a new empty file.

mod export;
mod list;
mod show;
mod steer;
mod tasks;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tem_core::{Batch, Engine, EngineOptions};

use crate::config;
use crate::usage::UsageError;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The batches in the database, newest first.
    List(list::Args),
    /// A batch's report: counts, timing, throughput, errors, retries, stuck tasks.
    Show(show::Args),
    /// A batch's tasks, in input order.
    Tasks(tasks::Args),
    /// A live view of a batch, until it finishes or is interrupted.
    Watch(watch::Args),
    /// Stop a batch: workers start no more of its tasks; it can be resumed.
    Interrupt(steer::InterruptArgs),
    /// Continue an interrupted batch (and requeue tasks whose worker died).
    Resume(steer::Args),
    /// Cancel a batch: its pending tasks will never run. Nothing is deleted.
    Cancel(steer::Args),
    /// Put a batch's failed tasks back to pending with fresh attempts.
    RetryFailed(steer::Args),
    /// One JSON line per task (input order): status, attempts, result or error.
    Export(export::Args),
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::List(args) => list::run(args).await,
        Command::Show(args) => show::run(args).await,
        Command::Tasks(args) => tasks::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Interrupt(args) => steer::interrupt(args).await,
        Command::Resume(args) => steer::resume(args).await,
        Command::Cancel(args) => steer::cancel(args).await,
        Command::RetryFailed(args) => steer::retry_failed(args).await,
        Command::Export(args) => export::run(args).await,
    }
}

/// The database option every subcommand takes.
#[derive(clap::Args, Clone)]
pub struct DbArg {
    /// The database: a SQLite file or a postgres:// URL [default: TEM_DB, `db` in tem.toml,
    /// else tem.db].
    #[arg(long, value_name = "FILE|URL")]
    pub db: Option<PathBuf>,
}

/// Opens an existing database to read it; never creates one. A read-only file is opened
/// read-only.
pub async fn open(db: &DbArg) -> anyhow::Result<(Engine, PathBuf)> {
    match open_with(db, false).await {
        Err(error) if matches!(error.downcast_ref(), Some(tem_core::Error::DatabaseReadOnly(_))) => {
            open_with(db, true).await
        }
        other => other,
    }
}

/// Opens an existing database to change it; never creates one.
pub async fn open_to_write(db: &DbArg) -> anyhow::Result<(Engine, PathBuf)> {
    open_with(db, false).await
}

async fn open_with(db: &DbArg, read_only: bool) -> anyhow::Result<(Engine, PathBuf)> {
    let path = config::db_path(db.db.clone())?;
    let options = EngineOptions {
        create_if_missing: false,
        read_only,
        ..EngineOptions::default()
    };
    match Engine::open_with(&path.display().to_string(), options).await {
        Ok(engine) => Ok((engine, path)),
        Err(tem_core::Error::DatabaseMissing(_)) => Err(UsageError(format!(
            "database {} does not exist; give the database run-batch used with --db (or TEM_DB)",
            config::shown_db(&path)
        ))
        .into()),
        Err(tem_core::Error::NotTemDatabase(_)) => Err(UsageError(format!(
            "{} is not a tem database; give the database run-batch used with --db (or TEM_DB)",
            config::shown_db(&path)
        ))
        .into()),
        Err(e @ (tem_core::Error::DatabaseReadOnly(_) | tem_core::Error::DatabaseFile { .. })) => {
            Err(anyhow::Error::new(e))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening {}", config::shown_db(&path)))),
    }
}

/// The batch called `code`, or a usage error that says how to find the right one.
pub async fn find(engine: &Engine, db: &std::path::Path, code: &str) -> anyhow::Result<Batch> {
    match engine.find_batch(code).await? {
        Some(batch) => Ok(batch),
        None => Err(UsageError(format!(
            "no batch `{code}` in {}; `tem batch list --db {}` shows the batches there",
            config::shown_db(db),
            config::shown_db(db)
        ))
        .into()),
    }
}
