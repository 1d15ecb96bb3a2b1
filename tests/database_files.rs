//! SQLite files that cannot serve as the user expects: a directory given as `--db`, a read-only
//! database. Each is one sentence that names the path and the fix (exit 2), never the driver's
//! error three times; a read-only database can still be inspected.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tem_e2e::binary::tem;
use tem_e2e::echo;

fn tem_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(tem())
        .current_dir(dir)
        .args(args)
        .env_remove("TEM_CONFIG")
        .env_remove("TEM_DB")
        .env_remove("TEM_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run tem")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn input(dir: &Path) {
    std::fs::write(dir.join("items.jsonl"), "{\"id\": \"1\"}\n{\"id\": \"2\"}\n").unwrap();
}

#[test]
fn a_directory_as_the_database_is_named_once_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let commands: [&[&str]; 3] = [
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            "http://127.0.0.1:9",
            "--db",
            "adir",
        ],
        &["batch", "list", "--db", "adir"],
        &["batch", "cancel", "items", "--db", "adir"],
    ];
    for args in commands {
        let output = tem_in(dir.path(), args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is a directory"), "{args:?}: {err}");
        assert!(err.contains("adir/tem.db"), "{args:?}: the fix: {err}");
        assert!(
            !err.contains("disk I/O error"),
            "{args:?}: the driver's words: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: one sentence: {err}");
    }
}

/// A small tmpfs at `dir`, later made read-only; unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path) -> Option<Mount> {
        // SAFETY: getuid has no preconditions.
        if unsafe { getuid() } != 0 {
            eprintln!("skipped: mounting a read-only filesystem needs root");
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: could not mount a tmpfs at {}", dir.display());
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }

    fn read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount read-only");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

unsafe extern "C" {
    fn getuid() -> u32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_inspected_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let Some(mount) = Mount::tmpfs(&data) else { return };
    input(dir.path());
    let (api, url) = echo::start("", Duration::ZERO).await;
    let db_path = data.join("tem.db");
    let db = db_path.to_str().unwrap();
    let dir_path = dir.path().to_path_buf();
    let url_for = url.clone();
    let db_for = db.to_owned();
    let run = tokio::task::spawn_blocking(move || {
        let db = db_for.as_str();
        tem_in(
            &dir_path,
            &[
                "run-batch",
                "items.jsonl",
                "--base-url",
                &url_for,
                "--path",
                "/items/{id}",
                "--db",
                db,
                "--quiet",
            ],
        )
    })
    .await
    .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(api.total(), 2);
    mount.read_only();

    let list = tem_in(dir.path(), &["batch", "list", "--db", db, "--json"]);
    assert!(
        list.status.success(),
        "inspection of a read-only file: {}",
        stderr(&list)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("\"items\""));
    let show = tem_in(dir.path(), &["batch", "show", "items", "--db", db]);
    assert!(show.status.success(), "{}", stderr(&show));

    let cancel = tem_in(dir.path(), &["batch", "cancel", "items", "--db", db]);
    assert_eq!(cancel.status.code(), Some(2), "{}", stderr(&cancel));
    assert!(stderr(&cancel).contains("read-only"), "{}", stderr(&cancel));
    let rerun = tem_in(
        dir.path(),
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
            "--db",
            db,
        ],
    );
    let err = stderr(&rerun);
    assert_eq!(rerun.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--db") && err.contains("read-only") && err.contains("writable"),
        "{err}"
    );
    assert_eq!(api.total(), 2, "nothing was called again");
}
