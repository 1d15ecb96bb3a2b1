//! The live view of a running batch: an indicatif bar on a terminal, a line every few seconds
//! when stderr is a file or a pipe (so logs stay readable), nothing in quiet or JSON mode.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tem_core::BatchStats;

use crate::plan::Display;

/// How often the plain view prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Progress of one batch, drawn on stderr.
pub struct Progress {
    view: View,
    started: Instant,
    /// Finished tasks when the view started (a resumed batch), for an honest rate.
    finished_at_start: Option<i64>,
    /// What the run waits for, shown with the counts (the database during an outage).
    waiting: Option<String>,
    last: Option<BatchStats>,
}

enum View {
    Bar(ProgressBar),
    Plain { last: Instant },
    Off,
}

impl Progress {
    /// A view for `display`, choosing a bar only when stderr is a terminal.
    pub fn new(display: Display, label: &str) -> Progress {
        let view = match display {
            Display::Quiet | Display::Json => View::Off,
            Display::Human if std::io::stderr().is_terminal() => View::Bar(bar(label)),
            Display::Human => View::Plain {
                last: Instant::now() - PLAIN_EVERY,
            },
        };
        Progress {
            view,
            started: Instant::now(),
            finished_at_start: None,
            waiting: None,
            last: None,
        }
    }

    /// The run waits for `what` (said once on its own line, then beside the counts) until
    /// [`Progress::resumed`].
    pub fn waiting(&mut self, what: String, line: &str) {
        self.note(line);
        self.waiting = Some(what);
        self.redraw();
    }

    /// The wait is over.
    pub fn resumed(&mut self, line: &str) {
        self.note(line);
        self.waiting = None;
        self.redraw();
    }

    fn redraw(&mut self) {
        if let (View::Bar(bar), Some(stats)) = (&self.view, &self.last) {
            bar.set_message(self.message(stats));
        }
    }

    fn message(&self, stats: &BatchStats) -> String {
        match &self.waiting {
            Some(what) => format!("{} · {what}", counts(stats)),
            None => counts(stats),
        }
    }

    /// Shows `stats`.
    pub fn update(&mut self, stats: &BatchStats) {
        self.last = Some(*stats);
        let finished = stats.finished();
        let start = *self.finished_at_start.get_or_insert(finished);
        let message = self.message(stats);
        match &mut self.view {
            View::Bar(bar) => {
                bar.set_length(u64::try_from(stats.total).unwrap_or(0));
                if bar.position() == 0 && finished > 0 && start == finished {
                    // A resumed batch: start where it is, without counting that as speed.
                    bar.set_position(u64::try_from(finished).unwrap_or(0));
                    bar.reset_eta();
                } else {
                    bar.set_position(u64::try_from(finished).unwrap_or(0));
                }
                bar.set_message(message);
            }
            View::Plain { last } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    let rate = (finished - start) as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!("  {}  {}  {rate:.0}/s", fraction(stats), counts(stats));
                }
            }
            View::Off => {}
        }
    }

    /// Prints `line` on stderr without tearing the bar.
    pub fn note(&self, line: &str) {
        match &self.view {
            View::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            View::Plain { .. } => eprintln!("{line}"),
            View::Off => {}
        }
    }

    /// Leaves the final state on screen.
    pub fn finish(&mut self, stats: &BatchStats) {
        match &self.view {
            View::Bar(bar) => {
                bar.set_message(counts(stats));
                bar.abandon();
            }
            View::Plain { .. } => eprintln!("  {}  {}", fraction(stats), counts(stats)),
            View::Off => {}
        }
    }
}

fn bar(label: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix} {wide_bar:.cyan/blue} {pos}/{len} {percent:>3}% · {per_sec} · ETA {eta}\n  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("█▓░");
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8)).with_style(style);
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn fraction(stats: &BatchStats) -> String {
    let pct = if stats.total > 0 {
        stats.finished() as f64 * 100.0 / stats.total as f64
    } else {
        0.0
    };
    format!("{}/{} ({pct:.0}%)", stats.finished(), stats.total)
}

/// `ok 9,812 · retrying 3 · failed 12 · in flight 64 · 429s 40`
pub fn counts(stats: &BatchStats) -> String {
    let mut parts = vec![
        format!("ok {}", stats.completed),
        format!("retrying {}", stats.retrying),
        format!("failed {}", stats.failed),
        format!("in flight {}", stats.running),
    ];
    if stats.rate_limited > 0 {
        parts.push(format!("429s {}", stats.rate_limited));
    }
    if stats.overloaded > 0 {
        parts.push(format!("overloaded {}", stats.overloaded));
    }
    if stats.cancelled > 0 {
        parts.push(format!("cancelled {}", stats.cancelled));
    }
    parts.join(" · ")
}
