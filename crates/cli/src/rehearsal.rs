//! Before a run writes anything: the input is rehearsed (read whole, its first lines turned into
//! the requests they would send) so that settings wrong for every line, a file that is mostly
//! not JSON, or an `--output` that cannot be written stop the run with exit 2 — not after a
//! batch of failed tasks whose code then refuses the corrected settings. `--dry-run` shows the
//! rehearsal and stops there.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use tem_core::http::{self, InputSource, LineError, PreparedRequest, Rehearsal};

use crate::plan::RunPlan;
use crate::usage::UsageError;

/// Lines turned into requests to judge the settings by.
const SAMPLE: usize = 20;

/// Rehearses `source` under `plan`; a usage error when the run could not work.
pub fn check(plan: &RunPlan, source: &InputSource, show: usize) -> anyhow::Result<Rehearsal> {
    let env = |name: &str| std::env::var(name).ok().or_else(|| Some(format!("${{{name}}}")));
    let rehearsal = http::rehearse(source, &plan.template, SAMPLE.max(show), &env)?;
    if rehearsal.mostly_unreadable() {
        let (line, why) = rehearsal.first_unreadable.clone().unwrap_or_default();
        crate::usage!(
            "{}: {} of {} lines are not JSON objects (line {line}: {why}); is this the right file? \
             Each line must be one JSON object. Nothing was written",
            source.name(),
            rehearsal.unreadable,
            rehearsal.lines
        );
    }
    if let Some((line, error)) = rehearsal.fails_everywhere() {
        let checked = rehearsal.sample.len();
        let lines = if checked == 1 {
            "the only line".to_owned()
        } else {
            format!("none of the first {checked} lines")
        };
        crate::usage!(
            "{lines} of {} can become a request — line {line}: {}. Nothing was written; fix the \
             settings (`--dry-run` shows the requests a run would send)",
            source.name(),
            describe(error)
        );
    }
    if let Some(output) = &plan.output {
        writable(output)?;
    }
    Ok(rehearsal)
}

/// `--dry-run`: the first `show` requests on stdout as JSON lines (secrets masked), a summary on
/// stderr; exit 0 when every line can become a request, else 1.
pub fn dry_run(source: &InputSource, rehearsal: &Rehearsal, show: usize) -> ExitCode {
    for (line, result) in rehearsal.sample.iter().take(show) {
        let shown = match result {
            Ok(request) => json!({ "line": line, "request": shown_request(request) }),
            Err(error) => json!({ "line": line, "error": describe(error) }),
        };
        println!("{shown}");
    }
    eprintln!(
        "dry run: {} lines in {}, {} of them cannot become a request; nothing was called or written",
        rehearsal.lines,
        source.name(),
        rehearsal.invalid
    );
    if rehearsal.invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A request as it would be sent, the values of `${VAR}`s masked.
fn shown_request(request: &PreparedRequest) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(name, value)| {
            let mut text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            for secret in request.secrets.iter().filter(|s| !s.is_empty()) {
                text = text.replace(secret.as_str(), "***");
            }
            (name.as_str().to_owned(), text.into())
        })
        .collect();
    json!({
        "method": request.method.as_str(),
        "url": request.url,
        "headers": headers,
        "body": request.body,
    })
}

/// A line's error with what to change: a setting is named as such, a payload field as a field.
fn describe(error: &LineError) -> String {
    let setting = matches!(
        error.field.as_str(),
        "(template)" | "(line)" | "path" | "body" | "method" | "url"
    ) || error.field.starts_with("header ");
    if setting {
        error.to_string()
    } else {
        format!("field `{}`: {}", error.field, error.message)
    }
}

/// Whether `--output` can be written where the run will write it (a temporary file beside it,
/// renamed into place), checked before the first call rather than after the last.
fn writable(output: &Path) -> Result<(), UsageError> {
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "--output {}: the directory {} does not exist; create it first",
            output.display(),
            dir.display()
        )));
    }
    if output.is_dir() {
        return Err(UsageError(format!(
            "--output {}: is a directory; give a file name",
            output.display()
        )));
    }
    tempfile::Builder::new()
        .prefix(".tem-output-check")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            UsageError(format!(
                "--output {}: cannot write in {} ({e}); choose a writable place",
                output.display(),
                dir.display()
            ))
        })
}
