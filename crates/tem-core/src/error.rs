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

    /// True for errors a caller may retry as is: SQLite busy/locked, a dropped connection.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => {
                let code = db.code();
                // Postgres: serialization failure, deadlock detected (the victim is rolled back
                // and may simply run again), lock not available, too many connections.
                if matches!(code.as_deref(), Some("40001" | "40P01" | "55P03" | "53300")) {
                    return true;
                }
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), including their extended codes; only for
                // SQLite (a Postgres SQLSTATE such as 42501 would look like one).
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_none() {
                    return false;
                }
                let primary = code
                    .as_deref()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff);
                matches!(primary, Some(5) | Some(6))
            }
            Error::Commit(inner) => inner.is_transient(),
            Error::Database(sqlx::Error::Io(_))
            | Error::Database(sqlx::Error::PoolTimedOut)
            | Error::Database(sqlx::Error::WorkerCrashed) => true,
            _ => false,
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
