//! Postgres backend: one batch served by many processes on many machines.
//!
//! The same operations as the SQLite backend, written for many concurrent writers: claims take
//! rows with `FOR UPDATE SKIP LOCKED`, every write transaction first locks the batch rows it will
//! touch (in id order, so transactions never wait on each other in opposite orders), and limits
//! that must hold across processes live in rows (`limit_rate`, `limit_pause`, the batch's
//! `running` counter). Idle workers wake on `LISTEN tem_work` instead of polling hard.

mod admin;
mod batches;
mod claim;
mod complete;
mod cycle;
mod delete;
mod enqueue;
mod interrupt;
mod lease;
mod notify;
mod query;
mod report;
mod shared_rate;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::engine::EngineOptions;
use crate::error::{Error, Result};

/// The embedded migrations of the Postgres schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A Postgres database opened for the engine.
#[derive(Clone, Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    /// The engine's default interruption criteria as JSON (`None` when it has none).
    criteria_defaults: Option<Arc<str>>,
}

/// How long the pool tries to hand out a connection before the attempt counts as failed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the server lets one of our transactions sit idle before it ends the session. A
/// process frozen mid-transaction (SIGSTOP, a paused VM, a swap storm) would otherwise hold the
/// batch row it locked and stall every other process on the batch until it thawed. Our
/// transactions send their statements back to back, so they never idle this long; an ended one
/// reaches its process as a dropped connection, retried as transient, and its writes are fenced.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

impl PgStore {
    /// Connects to `url` and applies pending migrations (under Postgres's advisory lock, so
    /// processes starting together migrate once).
    pub async fn open(url: &str, options: &EngineOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::InvalidUrl {
                url: redact(url),
                reason: e.to_string(),
            })?
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)]);
        // One connection first: a server that is not there is said so at once, instead of after
        // the pool has retried for its whole acquire timeout.
        let probe = sqlx::ConnectOptions::connect(&connect)
            .await
            .map_err(|e| unreachable_or(e, url))?;
        let _ = sqlx::Connection::close(probe).await;
        // The writer connection of the group commit plus readers; a claim never waits for a
        // reader. While the server is away the pool keeps reconnecting for its acquire timeout
        // before it fails: kept short, so an outage is said within seconds (the engine's outage
        // tolerance, not this timeout, decides when to give up).
        let pool = PgPoolOptions::new()
            .max_connections(options.read_connections.max(1) + 2)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await
            .map_err(|e| unreachable_or(e, url))?;
        if !options.create_if_missing {
            // Only reading or steering: an empty or foreign database is refused, not migrated.
            let ours: bool = sqlx::query_scalar(
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL AND to_regclass('batch') IS NOT NULL \
                    AND to_regclass('limit_rate') IS NOT NULL",
            )
            .fetch_one(&pool)
            .await?;
            if !ours {
                pool.close().await;
                return Err(Error::NotTemDatabase(redact(url)));
            }
        }
        MIGRATOR.run(&pool).await?;
        let criteria_defaults = super::criteria_json(&options.criteria)?;
        Ok(PgStore {
            pool,
            criteria_defaults,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A connection that failed before anything was asked of it, said as such.
fn unreachable_or(error: sqlx::Error, url: &str) -> Error {
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some("3D000")
    {
        return Error::DatabaseMissing(redact(url));
    }
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => Error::DatabaseUnreachable {
            url: redact(url),
            reason: error.to_string(),
        },
        other => Error::Database(other),
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Locks the rows of `ids` (and, with `all`, of every batch that has active work: active, or
/// with tasks still running) in id order; the first statement of every write transaction.
/// Returns whether any of them has interruption criteria of its own.
async fn lock_batches(conn: &mut sqlx::PgConnection, ids: &[i64], all: bool) -> Result<bool> {
    let own_criteria: Vec<bool> = sqlx::query_scalar(
        "SELECT interruption_criteria IS NOT NULL FROM batch \
         WHERE id = ANY($1) OR ($2 AND (status = 'active' OR running > 0)) \
         ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .bind(all)
    .fetch_all(&mut *conn)
    .await?;
    Ok(own_criteria.contains(&true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
