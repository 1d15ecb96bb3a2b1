//! SQLite backend: one writer connection, a pool of readers, WAL, embedded migrations.
//!
//! All writes of a process go through one connection (`write`, a pool of size 1), so they never
//! contend with each other for SQLite's single write lock; other processes on the same file are
//! arbitrated by `BEGIN IMMEDIATE` and the busy timeout. Readers run concurrently under WAL.

mod admin;
mod batches;
mod claim;
mod complete;
mod cycle;
mod delete;
mod enqueue;
mod interrupt;
mod lease;
mod program;
mod query;
mod report;
mod spent_rate;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::engine::{Durability, EngineOptions};
use crate::error::{Error, Result};

/// The embedded migrations of the SQLite schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A SQLite database opened for the engine.
#[derive(Clone, Debug)]
pub(crate) struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    /// The engine's default interruption criteria, as JSON for the check in every commit
    /// (`None` when it has none).
    criteria_defaults: Option<std::sync::Arc<str>>,
}

impl SqliteStore {
    /// Opens (and migrates) the database at `url`.
    pub async fn open(url: &str, options: &EngineOptions) -> Result<Self> {
        let (connect, file) = connect_options(url)?;
        if let Some(path) = &file {
            check_is_ours(
                path,
                options.create_if_missing && !options.read_only,
                options.read_only,
            )
            .await?;
        }
        let connect = connect
            .create_if_missing(options.create_if_missing)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .statement_cache_capacity(512)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            });
        let connect = if options.read_only {
            // Inspection only: nothing may write, not even the journal mode or a migration. As
            // immutable: a WAL database on a read-only filesystem cannot create its shared-memory
            // file, and reads what its last checkpoint left (a clean close checkpoints all).
            connect.read_only(true).immutable(true)
        } else if file.is_some() {
            connect.journal_mode(SqliteJournalMode::Wal)
        } else {
            connect
        };

        // An in-memory database lives as long as one connection to it: keep exactly one, forever.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(if file.is_some() { 0 } else { 1 })
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(120))
            .connect_with(connect.clone())
            .await?;
        if !options.read_only {
            migrate(&write).await?;
        }

        let read = if file.is_some() {
            SqlitePoolOptions::new()
                .max_connections(options.read_connections.max(1))
                .test_before_acquire(false)
                .connect_with(connect)
                .await?
        } else {
            write.clone()
        };
        let criteria_defaults = super::criteria_json(&options.criteria)?;
        Ok(SqliteStore {
            write,
            read,
            criteria_defaults,
        })
    }

    /// Closes both pools, waiting for their connections to finish.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Whether this process may write `path` (its permissions, and a read-only filesystem).
fn writable(path: &std::path::Path) -> bool {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        ),
    }
}

/// Refuses a file that is not a tem database before anything touches it (WAL mode and the
/// migrations both write): a missing file unless we may create it, another application's SQLite
/// file, or something that is not SQLite at all. An empty file is a new database.
async fn check_is_ours(path: &std::path::Path, create_if_missing: bool, read_only: bool) -> Result<()> {
    let shown = || path.display().to_string();
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if create_if_missing {
                Ok(())
            } else {
                Err(Error::DatabaseMissing(shown()))
            };
        }
        Err(e) => return Err(Error::Io(e)),
    };
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::DatabaseFile {
            path: shown(),
            reason: format!(
                "it is a directory; give a file inside it, e.g. `{}`",
                path.join("tem.db").display()
            ),
        });
    }
    if !read_only && !writable(path) {
        return Err(Error::DatabaseReadOnly(shown()));
    }
    if size == 0 {
        return if create_if_missing {
            Ok(())
        } else {
            Err(Error::NotTemDatabase(shown()))
        };
    }
    let probe = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(read_only);
    let mut conn = match sqlx::ConnectOptions::connect(&probe).await {
        Ok(conn) => conn,
        Err(e) => return Err(not_ours_or(e, shown())),
    };
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| not_ours_or(e, shown()))?;
    let _ = sqlx::Connection::close(conn).await;
    // Every table one of ours (a database mid-migration by another process has only some).
    const TEM_TABLES: [&str; 7] = [
        "_sqlx_migrations",
        "limit_rate",
        "batch",
        "task",
        "task_attempt",
        "limit_pause",
        "batch_interruption",
    ];
    let ours = tables.iter().any(|t| t == "_sqlx_migrations")
        && tables
            .iter()
            .all(|t| TEM_TABLES.contains(&t.as_str()) || t.starts_with("sqlite_"));
    if ours || (tables.is_empty() && create_if_missing) {
        Ok(())
    } else {
        Err(Error::NotTemDatabase(shown()))
    }
}

/// SQLite's "file is not a database" as [`Error::NotTemDatabase`]; anything else as it is.
fn not_ours_or(error: sqlx::Error, path: String) -> Error {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("26") => Error::NotTemDatabase(path),
        _ => Error::Database(error),
    }
}

/// Applies pending migrations. Two processes opening a new file at once may race on the first
/// migration; the loser sees the winner's schema on its second look.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    match MIGRATOR.run(pool).await {
        Ok(()) => Ok(()),
        Err(first) => {
            tracing::debug!(error = %first, "migration failed once; checking again");
            MIGRATOR.run(pool).await.map_err(Error::from)
        }
    }
}

/// Parses `sqlite://path`, `sqlite:path`, `sqlite::memory:` or a bare file path.
fn connect_options(url: &str) -> Result<(SqliteConnectOptions, Option<PathBuf>)> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    if url.is_empty() {
        return Err(invalid(
            "empty; use a file path such as `tem.db` or `sqlite::memory:`".into(),
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(invalid(
            "this build of tem has no Postgres backend yet; use a SQLite file".into(),
        ));
    }
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let file = (!in_memory).then(|| options.get_filename().to_path_buf());
        return Ok((options, file));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(invalid(format!(
            "unknown scheme `{scheme}`; use `sqlite://PATH`, `sqlite::memory:` or a file path"
        )));
    }
    let path = PathBuf::from(url);
    Ok((SqliteConnectOptions::new().filename(&path), Some(path)))
}

/// `(?,?,…),(?,?,…)…`: `rows` tuples of `cols` placeholders, for set-based statements.
fn tuples(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    vec![one; rows].join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_understood() {
        assert!(connect_options("sqlite::memory:").unwrap().1.is_none());
        assert_eq!(
            connect_options("sqlite://x/tem.db").unwrap().1.unwrap(),
            PathBuf::from("x/tem.db")
        );
        assert_eq!(
            connect_options("tem.db").unwrap().1.unwrap(),
            PathBuf::from("tem.db")
        );
        let err = connect_options("mysql://h/db").unwrap_err().to_string();
        assert!(err.contains("unknown scheme `mysql`"), "{err}");
        assert!(connect_options("").is_err());
    }

    #[test]
    fn tuples_have_the_right_shape() {
        assert_eq!(tuples(2, 3), "(?,?,?),(?,?,?)");
    }
}
