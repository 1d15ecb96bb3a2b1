//! The metadata database: one SQLite row per stream with what it was created with.
//!
//! SQLite (through sqlx, which the workspace already uses) rather than an embedded KV: the
//! rows are few and written rarely (create, delete, lazily-recorded access times), a
//! transaction gives crash safety for free, and anyone can inspect a data directory with the
//! `sqlite3` shell.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::Error;
use crate::stream::Stream;
use crate::ttl::Lifetime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A stream's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MetaRow {
    pub id: u64,
    pub path: String,
    pub content_type: String,
    pub ttl_secs: Option<i64>,
    pub expires_at: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub fork_source: Option<u64>,
    pub fork_at: u64,
    pub fork_sub_offset: u64,
    pub created_ms: u64,
    pub last_access_ms: u64,
    pub soft_deleted: bool,
}

impl MetaRow {
    /// The lifetime the stream was created with.
    pub fn lifetime(&self) -> Lifetime {
        Lifetime {
            ttl_secs: self.ttl_secs.map(|secs| secs as u64),
            expires_at: self.expires_at.clone().zip(self.expires_at_ms),
        }
    }
}

/// The open metadata database.
#[derive(Debug)]
pub struct Meta {
    pool: SqlitePool,
}

impl Meta {
    /// Opens (creating and migrating) `meta.db` in `dir`.
    pub async fn open(dir: &Path) -> Result<Meta, Error> {
        let url = format!("sqlite://{}", dir.join("meta.db").display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(false);
        // One connection: metadata writes are rare and serialized by the store's lifecycle lock.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Meta { pool })
    }

    /// Every row, sources before their forks (ids grow with creation).
    pub async fn rows(&self) -> Result<Vec<MetaRow>, Error> {
        Ok(sqlx::query_as("SELECT * FROM streams ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records a new stream (its segment file is already durable).
    pub async fn insert(&self, stream: &Stream) -> Result<(), Error> {
        let lifetime = &stream.config.lifetime;
        let fork = stream.config.fork.as_ref();
        sqlx::query(
            "INSERT INTO streams (id, path, content_type, ttl_secs, expires_at, expires_at_ms, fork_source, \
             fork_at, fork_sub_offset, created_ms, last_access_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(stream.id as i64)
        .bind(&stream.path)
        .bind(&stream.config.content_type)
        .bind(lifetime.ttl_secs.map(|secs| secs as i64))
        .bind(lifetime.expires_at.as_ref().map(|(text, _)| text.clone()))
        .bind(lifetime.expires_at.as_ref().map(|(_, ms)| *ms))
        .bind(fork.map(|f| f.source.id as i64))
        .bind(fork.map_or(0, |f| f.at as i64))
        .bind(fork.map_or(0, |f| f.sub_offset as i64))
        .bind(stream.created_ms as i64)
        .bind(stream.last_access_ms() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a stream deleted-but-kept-for-its-forks.
    pub async fn soft_delete(&self, id: u64) -> Result<(), Error> {
        sqlx::query("UPDATE streams SET soft_deleted = 1 WHERE id = ?")
            .bind(id as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a stream.
    pub async fn delete(&self, id: u64) -> Result<(), Error> {
        sqlx::query("DELETE FROM streams WHERE id = ?")
            .bind(id as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes renewed access times, in one transaction.
    pub async fn record_access(&self, changes: &[(u64, u64)]) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, at) in changes {
            sqlx::query("UPDATE streams SET last_access_ms = max(last_access_ms, ?) WHERE id = ?")
                .bind(*at as i64)
                .bind(*id as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
