//! A Postgres server of the test's own — `initdb` in a temporary directory, on a free port of
//! 127.0.0.1 — for tests that stop or restart the server. The machine's shared server is never
//! touched. Built from the machine's PostgreSQL binaries (`/usr/lib/postgresql/*/bin`, or
//! `PG_BIN`); as root they run as the `postgres` user, since the server refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running throwaway cluster; stopped and deleted when dropped.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Starts a cluster, or says on stderr why it cannot and returns `None` (the caller skips).
    pub fn start() -> Option<PgCluster> {
        match Self::try_start() {
            Ok(cluster) => Some(cluster),
            Err(reason) => {
                eprintln!("skipped: cannot start a Postgres server of the test's own: {reason}");
                None
            }
        }
    }

    /// Starts a cluster, or says why it cannot.
    pub fn try_start() -> Result<PgCluster, String> {
        let bin = pg_bin().ok_or("no PostgreSQL binaries (install Debian's `postgresql`, or set PG_BIN)")?;
        let dir = tempfile::Builder::new()
            .prefix("tem-test-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        // SAFETY: getuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc_getuid() } == 0;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("chown to the postgres user failed (is there one?)".into());
            }
        }
        let port = free_port().map_err(|e| e.to_string())?;
        let cluster = PgCluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        cluster.pg_ctl(&["start", "-w"])?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server (fast shutdown: connections are cut, as in a failover).
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w"])
            .expect("restart Postgres");
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]).expect("stop Postgres");
    }

    /// Starts the stopped server again.
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w"]).expect("start Postgres");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.path().join("log").display().to_string();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let mut all = vec!["-D", &data, "-l", &log, "-o", &options];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            Err(format!(
                "{program} failed: {}{}\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }
}

/// The newest PostgreSQL `bin` directory on this machine (or `PG_BIN`).
pub fn pg_bin() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(bin));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| Path::new(bin).join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

unsafe extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}
