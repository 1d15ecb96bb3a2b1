//! A program: several SQL statements sent to SQLite in one call.
//!
//! sqlx runs each SQLite statement on the connection's own thread, and on a busy two-core
//! machine the hand-off costs more than the statement: 50–200 µs per round trip against a few
//! µs of SQLite work. A program sends `BEGIN IMMEDIATE; …; COMMIT` as one text and reads every
//! statement's rows back from one stream. Each distinct text is prepared once and cached by the
//! connection.
//!
//! Parameters are anonymous `?`, consumed in order across the statements (that is how sqlx binds
//! a multi-statement text; numbered `?N` with gaps would silently bind NULL). Every statement is
//! pushed with its values in placeholder order, and the count is checked.
//!
//! sqlx marks multi-statement prepared queries as deprecated (launchbadge/sqlx#3108) without a
//! replacement that takes bind parameters; the SQLite driver supports them and the engine's tests
//! exercise every program shape, so an upgrade that changes this fails loudly, not silently.

use std::sync::Arc;

use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteQueryResult, SqliteRow};
use sqlx::{Arguments, Either};

use crate::error::{Error, Result};

/// The rows and change count of one statement of a program.
#[derive(Debug, Default)]
pub(super) struct StatementResult {
    pub rows: Vec<SqliteRow>,
    pub changes: u64,
}

/// A value bound to one `?`.
#[derive(Clone, Debug)]
pub(super) enum Value {
    Int(i64),
    Text(Arc<str>),
    Null,
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Self {
        Value::Text(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v.into())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A multi-statement text and its binds, built statement by statement.
#[derive(Default)]
pub(super) struct Program {
    sql: String,
    args: SqliteArguments,
    statements: usize,
}

impl Program {
    /// A program that opens a write transaction.
    pub fn transaction() -> Self {
        let mut program = Program::default();
        // `push` with no values cannot fail.
        let _ = program.push("BEGIN IMMEDIATE", &[]);
        program
    }

    /// Appends one statement whose `?` placeholders take `values` in order; returns its index
    /// among the results of [`Program::run`].
    pub fn push(&mut self, statement: &str, values: &[Value]) -> Result<usize> {
        let placeholders = statement.matches('?').count();
        if placeholders != values.len() {
            return Err(Error::Corrupt(format!(
                "a statement has {placeholders} placeholders but {} values",
                values.len()
            )));
        }
        for value in values {
            let added = match value {
                Value::Int(v) => self.args.add(*v),
                Value::Text(v) => self.args.add(v.clone()),
                Value::Null => self.args.add(Option::<i64>::None),
            };
            added.map_err(|e| Error::Corrupt(format!("could not bind a parameter: {e}")))?;
        }
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
        self.statements += 1;
        Ok(self.statements - 1)
    }

    /// Appends `COMMIT`, runs the program and returns each statement's result in order. On an
    /// error the transaction is rolled back before the error is returned.
    pub async fn run(mut self, conn: &mut SqliteConnection) -> Result<Vec<StatementResult>> {
        self.push("COMMIT", &[])?;
        let expected = self.statements;
        let outcome = execute(conn, self.sql, self.args, expected).await;
        if outcome.is_err() {
            // The failing statement left the transaction open (or SQLite already rolled it
            // back, in which case this ROLLBACK fails harmlessly).
            if let Err(error) = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
                tracing::debug!(%error, "rollback after a failed program");
            }
        }
        outcome
    }
}

async fn execute(
    conn: &mut SqliteConnection,
    sql: String,
    args: SqliteArguments,
    expected: usize,
) -> Result<Vec<StatementResult>> {
    use futures::TryStreamExt;

    let mut results = Vec::with_capacity(expected);
    let mut current = StatementResult::default();
    let query = sqlx::query_with(sqlx::AssertSqlSafe(sql), args);
    #[allow(deprecated)] // see the module docs
    let mut stream = query.fetch_many(&mut *conn);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Right(row) => current.rows.push(row),
            Either::Left(done) => {
                let done: SqliteQueryResult = done;
                current.changes = done.rows_affected();
                results.push(std::mem::take(&mut current));
            }
        }
    }
    if results.len() != expected {
        return Err(Error::Corrupt(format!(
            "a program of {expected} statements returned {} results",
            results.len()
        )));
    }
    Ok(results)
}
