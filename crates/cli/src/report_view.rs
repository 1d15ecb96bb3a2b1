//! A [`BatchReport`] as text: what `tem batch show`, `watch`, `run-batch` and `demo` print.
//! Every line says what it measures; times are UTC with milliseconds.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use tem_core::{BatchReport, BatchStats, Spread};

/// The whole report.
pub fn render(report: &BatchReport) -> String {
    let mut out = String::new();
    let b = &report.batch;
    let s = &b.stats;
    let _ = writeln!(out, "batch `{}` ({}): {}", b.code, b.kind, b.status);
    let _ = writeln!(out, "  created      {}", timestamp(b.created_at));
    if let Some(input) = b.metadata.as_ref().and_then(|m| m.get("input")) {
        let name = input.get("name").and_then(|v| v.as_str()).unwrap_or("?");
        let _ = writeln!(out, "  input        {name}");
    }

    let _ = writeln!(out, "\ntasks         {}", s.total);
    for (label, n) in [
        ("completed", s.completed),
        ("failed", s.failed),
        ("cancelled", s.cancelled),
        ("pending", s.pending),
        ("running", s.running),
    ] {
        if n > 0 || matches!(label, "completed" | "failed") {
            let _ = writeln!(out, "  {label:<11} {n:>8}  {}", percent(n, s.total));
        }
    }
    if s.retrying > 0 {
        let _ = writeln!(out, "  (of the pending, {} wait to retry)", s.retrying);
    }

    let t = &report.timing;
    let _ = writeln!(out, "\ntiming (first start → last finish)");
    match (t.first_start, t.elapsed_ms) {
        (Some(first), Some(elapsed)) => {
            let end = t
                .last_finish
                .map(timestamp)
                .unwrap_or_else(|| "still running".into());
            let _ = writeln!(
                out,
                "  span         {}  ({} → {end})",
                seconds(elapsed),
                timestamp(first)
            );
            if let Some(rate) = t.throughput_per_sec {
                let _ = writeln!(out, "  throughput   {rate:.1} tasks/s finished over the span");
            }
        }
        _ => {
            let _ = writeln!(out, "  not started");
        }
    }
    if let Some(execution) = t.execution {
        let _ = writeln!(
            out,
            "  execution    {}  (last attempt: claim → finish)",
            spread(execution)
        );
    }
    if let Some(lifetime) = t.lifetime {
        let _ = writeln!(
            out,
            "  lifetime     {}  (enqueue → finish: queueing, backoff, every attempt)",
            spread(lifetime)
        );
    }

    let r = &report.retries;
    let _ = writeln!(out, "\nattempts");
    let _ = writeln!(
        out,
        "  completed on the first attempt   {:>8}",
        r.completed_first_attempt
    );
    let _ = writeln!(
        out,
        "  completed after retrying         {:>8}",
        r.completed_after_retries
    );
    let _ = writeln!(out, "  failed                           {:>8}", r.failed);
    let retries = format!(
        "  retries made                     {:>8}  {}",
        r.retries,
        causes(s)
    );
    let _ = writeln!(out, "{}", retries.trim_end());
    let _ = writeln!(
        out,
        "  most attempts by one task        {:>8}",
        r.max_attempts_used
    );

    if !report.failures.is_empty() {
        let _ = writeln!(out, "\nwhy tasks failed (last error, most common first)");
        for group in &report.failures {
            let _ = writeln!(out, "  {:>8}  {}", group.count, one_line(&group.message, 110));
        }
    }
    if !report.attempt_errors.is_empty() {
        let _ = writeln!(out, "\nwhy attempts failed (retried ones included)");
        for group in &report.attempt_errors {
            let outcome = group.outcome.map(|o| o.to_string()).unwrap_or_default();
            let status = group
                .http_status
                .map(|s| format!(" HTTP {s}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>8}  {outcome}{status}: {}",
                group.count,
                one_line(&group.message, 90)
            );
        }
    }
    if !report.stuck.is_empty() {
        let _ = writeln!(
            out,
            "\nstuck: {} running task(s) whose worker stopped renewing the lease (they run again when a worker rescues them)",
            report.stuck.len()
        );
        for stuck in report.stuck.iter().take(10) {
            let _ = writeln!(
                out,
                "  task {}  worker {}  lease expired {}",
                stuck.task,
                stuck.worker.as_deref().unwrap_or("?"),
                timestamp(stuck.lease_expired_at)
            );
        }
    }
    for interruption in &report.interruptions {
        let _ = writeln!(
            out,
            "\ninterrupted {} ({}): {}",
            timestamp(interruption.at),
            interruption.reason,
            interruption.message
        );
    }
    for pause in &report.pauses {
        let _ = writeln!(
            out,
            "\npaused: calls of `{}` wait until {} ({})",
            pause.key,
            timestamp(pause.until),
            pause.reason
        );
    }
    out
}

/// `(429: 40, overloaded: 3, timeouts: 1, lost to crashes: 2)`, or nothing.
fn causes(s: &BatchStats) -> String {
    let parts: Vec<String> = [
        ("429", s.rate_limited),
        ("overloaded", s.overloaded),
        ("timeouts", s.timed_out),
        ("lost to crashes", s.lost),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(label, n)| format!("{label}: {n}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("(attempts answered {})", parts.join(", "))
    }
}

/// `2026-11-22T10:00:01.123Z`
pub fn timestamp(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn seconds(ms: i64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

fn spread(s: Spread) -> String {
    format!(
        "avg {:.1} ms · min {} ms · max {} ms",
        s.avg_ms, s.min_ms, s.max_ms
    )
}

fn percent(n: i64, total: i64) -> String {
    if total == 0 {
        return String::new();
    }
    format!("{:5.1}%", n as f64 * 100.0 / total as f64)
}

/// The text on one line, cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!(
            "{}…",
            flat.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    }
}
