//! The crate's error type.

use crate::batch::BatchStatus;

/// Everything that can go wrong in an engine call (not in a task: see [`crate::TaskError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The embedded schema migrations could not be applied.
    #[error("could not migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The database URL is not one the engine understands.
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// No database server answered at the URL.
    #[error(
        "cannot reach the database at `{url}`: {reason} (is the server running, and the host and port right?)"
    )]
    DatabaseUnreachable { url: String, reason: String },

    /// The database file does not exist and the caller asked not to create it.
    #[error("database `{0}` does not exist")]
    DatabaseMissing(String),

    /// The path cannot serve as a database file (a directory, a read-only file to write to).
    #[error("cannot use `{path}` as a database: {reason}")]
    DatabaseFile { path: String, reason: String },

    /// The database file cannot be written (its permissions, a read-only filesystem); it can
    /// still be opened with [`crate::EngineOptions::read_only`].
    #[error("`{0}` is read-only: it can be inspected, not written")]
    DatabaseReadOnly(String),

    /// The file is a database, but not one the engine made.
    #[error("`{0}` is not a tem database (it has no tem schema)")]
    NotTemDatabase(String),

    /// No batch has this code or id.
    #[error("batch `{0}` not found")]
    BatchNotFound(String),

    /// A batch with this code already exists.
    #[error("a batch with code `{0}` already exists")]
    DuplicateBatch(String),

    /// The batch is not in a status that allows the operation.
    #[error("batch `{code}` is {status}; cannot {operation}")]
    BatchState {
        code: String,
        status: BatchStatus,
        operation: &'static str,
    },

    /// A worker holds some of the batch's tasks (live leases): it cannot be deleted under it.
    #[error(
        "batch `{code}` is running: {running} task(s) are held by a live worker. Stop it first \
         (`tem batch interrupt {code}`, or stop the run-batch process) and wait for its calls to finish"
    )]
    BatchRunning { code: String, running: u64 },

    /// Another process enqueued into the batch since its task count was read.
    #[error("batch `{code}` has {found} tasks, expected {expected}: another process is adding to it")]
    TotalChanged { code: String, expected: i64, found: i64 },

    /// An argument is out of range or malformed; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    /// A value could not be converted to or from JSON.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The database holds a value the engine does not understand (a newer or corrupted schema).
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),

    /// The group commit that carried this request failed.
    #[error("commit failed: {0}")]
    Commit(std::sync::Arc<Error>),

    /// Reading a database file's metadata or writing an export failed.
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),

    /// The database kept failing with transient errors (unreachable, restarting, locked) for
    /// longer than the engine's outage tolerance. Nothing committed is lost; rerun to continue.
    #[error("the database did not answer for {waited:?} (last error: {source}); nothing committed is lost")]
    DatabaseOutage {
        waited: std::time::Duration,
        #[source]
        source: Box<Error>,
    },

    /// The engine's background writer has stopped (the engine was closed or hit a fatal error).
    #[error("the engine is closed")]
    Closed,
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// True for errors a caller may retry as is: SQLite busy, locked or a failed read/write
    /// that may clear; on Postgres a serialization failure, a deadlock, a server shutting down
    /// or starting up; on either a dropped or refused connection.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => {
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    let primary = db
                        .code()
                        .as_deref()
                        .and_then(|c| c.parse::<i32>().ok())
                        .map(|c| c & 0xff);
                    return primary.is_some_and(sqlite_transient);
                }
                db.code().as_deref().is_some_and(postgres_transient)
            }
            Error::Commit(inner) => inner.is_transient(),
            Error::Database(sqlx::Error::Io(_))
            | Error::Database(sqlx::Error::PoolTimedOut)
            | Error::Database(sqlx::Error::WorkerCrashed) => true,
            _ => false,
        }
    }
}

/// SQLite's primary result codes worth retrying: SQLITE_BUSY (5), SQLITE_LOCKED (6) and
/// SQLITE_IOERR (10), which a network filesystem or a briefly failing disk reports and clears.
fn sqlite_transient(primary: i32) -> bool {
    matches!(primary, 5 | 6 | 10)
}

/// Postgres SQLSTATEs worth retrying: serialization failure and deadlock (the victim is rolled
/// back and may simply run again), lock not available, too many connections, the connection
/// exception class (08…), and a server shutting down, crashed or starting up (57P01–57P03).
fn postgres_transient(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_worth_retrying_include_their_extended_forms() {
        // Primary codes and extended ones (the primary in the low byte), e.g. SQLITE_BUSY_SNAPSHOT
        // 517, SQLITE_IOERR_READ 266, SQLITE_IOERR_FSYNC 1034.
        for code in [5, 517, 6, 262, 10, 266, 1034] {
            assert!(sqlite_transient(code & 0xff), "{code}");
        }
        // SQLITE_CORRUPT 11, SQLITE_READONLY 8 (and READONLY_DBMOVED 1032), SQLITE_CONSTRAINT 19.
        for code in [11, 8, 1032, 19, 1] {
            assert!(!sqlite_transient(code & 0xff), "{code}");
        }
    }

    #[test]
    fn postgres_states_worth_retrying() {
        for code in [
            "40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03", "08006", "08001",
        ] {
            assert!(postgres_transient(code), "{code}");
        }
        // Insufficient privilege, undefined table, unique violation, out of disk.
        for code in ["42501", "42P01", "23505", "53100"] {
            assert!(!postgres_transient(code), "{code}");
        }
    }

    #[test]
    fn giving_up_on_an_outage_is_final() {
        let outage = Error::DatabaseOutage {
            waited: std::time::Duration::from_secs(60),
            source: Box::new(Error::Database(sqlx::Error::PoolTimedOut)),
        };
        assert!(!outage.is_transient());
        assert!(!Error::Commit(std::sync::Arc::new(outage)).is_transient());
    }
}
