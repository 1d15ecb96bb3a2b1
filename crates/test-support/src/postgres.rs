//! A fresh Postgres database per test on the server at `TEM_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `.ci/run` starts one when none answers),
//! dropped when the test ends.

/// A database created for one test.
pub struct TestDatabase {
    url: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database; panics with the fix when no server answers.
    pub async fn create() -> TestDatabase {
        let admin_url = admin_url();
        let name = format!("tem_test_{}_{}", std::process::id(), unique());
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "Postgres is not reachable at {admin_url} ({e}); start one (.ci/run does) or point \
                 TEM_TEST_POSTGRES at a server where this user may create databases"
            )
        });
        let sql = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a database in TEM_TEST_POSTGRES");
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The URL `tem --db` takes.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime that must not block: a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = sqlx::PgPool::connect(&admin_url()).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await.ok()?;
                admin.close().await;
                Some(())
            })
        })
        .join();
    }
}

fn admin_url() -> String {
    std::env::var("TEM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}
