//! The synthetic cluster: jobs, their executions (at most one living per job), and nodes, drawn
//! from a seeded RNG (ts-topy's distributions), plus lifecycle events on a seeded schedule.
//!
//! Everything an execution shows later (status, counters) is a function of these fixed draws and
//! the time, so the same seed and clock give the same answers whoever asks, and counters only
//! grow.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::lifecycle::{ExStatus, Millis, Phase, Timing, phases};

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// How often a lifecycle event may happen (and does, half the time).
pub const EVENT_EVERY: Millis = 180 * SECOND;

#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub job_id: String,
    pub name: String,
    pub lifecycle: &'static str,
    pub workers: u64,
    pub operations: Vec<Value>,
    pub created: Millis,
    pub updated: Millis,
    pub active: bool,
}

/// Fixed draws of one execution; what it shows is computed from these and the time.
#[derive(Clone, Debug)]
pub(crate) struct Execution {
    pub ex_id: String,
    pub job: usize,
    pub created: Millis,
    pub start: Phase,
    /// When a stop event reached it, if one did.
    pub stop_at: Option<Millis>,
    pub id_bits: u64,
    pub analytics: bool,
    pub max_retries: u64,
    pub probation_window: u64,
    pub slicers: u64,
    pub has_errors: bool,
    pub slicer_hostname: String,
    pub slicer_port: u64,
    pub workers_joined: u64,
    pub workers_active: u64,
    pub workers_disconnected: u64,
    pub workers_reconnected: u64,
    pub fail_ratio: f64,
    pub subslice_factor: f64,
    pub slice_range_expansion: u64,
    pub subslice_by_key: u64,
    pub queuing_complete_after: Option<Millis>,
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub node_id: String,
    pub hostname: String,
    pub pid: u64,
    pub total: u64,
}

/// The whole synthetic cluster at one generation.
#[derive(Clone, Debug)]
pub(crate) struct World {
    pub seed: u64,
    pub generated_at: Millis,
    pub timing: Timing,
    pub jobs: Vec<Job>,
    pub executions: Vec<Execution>,
    pub nodes: Vec<Node>,
    /// Event slots already applied (slot k falls at `generated_at + k × EVENT_EVERY`).
    events_applied: u64,
}

/// A dashed UUID v4 from `rng`.
fn uuid(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-{}-{}-{}", h(0..4), h(4..6), h(6..8), h(8..10), h(10..16))
}

impl World {
    /// A new cluster drawn from `seed`, as seen at `now`.
    pub fn generate(seed: u64, now: Millis, timing: Timing) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut jobs = Vec::new();
        let mut executions = Vec::new();
        for _ in 0..rng.random_range(10..=30) {
            let job = draw_job(&mut rng, now);
            let index = jobs.len();
            if rng.random::<f64>() < 0.6 {
                let age = draw_age(&mut rng);
                let start = draw_living_start(&mut rng, now, age, &timing);
                executions.push(draw_execution(&mut rng, index, &job, now - age, start));
            }
            for _ in 0..rng.random_range(0..=3) {
                let age = rng.random_range(DAY..=180 * DAY);
                let created = now - age;
                let status = ExStatus::TERMINAL[rng.random_range(0..ExStatus::TERMINAL.len())];
                let ended = created + rng.random_range(MINUTE..=(age / 2).max(MINUTE + 1));
                let start = Phase { status, since: ended };
                executions.push(draw_execution(&mut rng, index, &job, created, start));
            }
            jobs.push(job);
        }
        let nodes = (0..rng.random_range(3..=8))
            .map(|n| Node {
                node_id: format!("node-{:08x}", rng.random::<u32>()),
                hostname: format!("10.0.1.{}", 10 + n),
                pid: rng.random_range(1_000..60_000),
                total: rng.random_range(5..=20),
            })
            .collect();
        World {
            seed,
            generated_at: now,
            timing,
            jobs,
            executions,
            nodes,
            events_applied: 0,
        }
    }

    /// Applies every lifecycle event due by `now`, in order. Each slot's draw depends only on
    /// the seed and the slot, and on the state at the slot's time, so the result does not
    /// depend on when anyone looks.
    pub fn advance(&mut self, now: Millis) {
        loop {
            let slot = self.events_applied + 1;
            let at = self.generated_at + EVENT_EVERY * i64::try_from(slot).unwrap_or(i64::MAX);
            if at > now {
                break;
            }
            self.events_applied = slot;
            let mut rng = StdRng::seed_from_u64(self.seed ^ slot.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            if rng.random::<f64>() >= 0.5 {
                continue;
            }
            let idle: Vec<usize> = (0..self.jobs.len())
                .filter(|&job| {
                    !self
                        .executions
                        .iter()
                        .any(|e| e.job == job && e.status_at(at, &self.timing).is_living())
                })
                .collect();
            let running: Vec<usize> = (0..self.executions.len())
                .filter(|&i| {
                    let status = self.executions[i].status_at(at, &self.timing);
                    status.is_running_group() && status != ExStatus::Stopping
                })
                .collect();
            let start = match (idle.is_empty(), running.is_empty()) {
                (true, true) => continue,
                (false, true) => true,
                (true, false) => false,
                (false, false) => rng.random::<bool>(),
            };
            if start {
                let job = idle[rng.random_range(0..idle.len())];
                let start = Phase {
                    status: ExStatus::Pending,
                    since: at,
                };
                let execution = draw_execution(&mut rng, job, &self.jobs[job], at, start);
                tracing::debug!(ex = %execution.ex_id, "teraslice mock: an execution started");
                self.executions.push(execution);
            } else {
                let ex = running[rng.random_range(0..running.len())];
                self.executions[ex].stop_at = Some(at);
                tracing::debug!(ex = %self.executions[ex].ex_id, "teraslice mock: an execution was stopped");
            }
        }
    }
}

impl Execution {
    /// Every phase it went through up to `now`.
    pub fn phases_at(&self, now: Millis, timing: &Timing) -> Vec<Phase> {
        let until = self.stop_at.map_or(now, |stop| stop.min(now));
        let mut walked = phases(self.start, until, self.id_bits, timing);
        if let Some(stop) = self.stop_at
            && stop <= now
        {
            let last = walked[walked.len() - 1];
            if last.status.is_running_group() && last.status != ExStatus::Stopping {
                let stopping = Phase {
                    status: ExStatus::Stopping,
                    since: stop,
                };
                walked.extend(phases(stopping, now, self.id_bits, timing));
            }
        }
        walked
    }

    pub fn status_at(&self, now: Millis, timing: &Timing) -> ExStatus {
        self.phases_at(now, timing)
            .last()
            .map_or(self.start.status, |phase| phase.status)
    }
}

fn draw_job(rng: &mut StdRng, now: Millis) -> Job {
    const NAMES: [&str; 4] = ["daily_etl", "hourly_sync", "export_data", "process_logs"];
    const OPS: [&str; 3] = ["elasticsearch_reader", "noop", "elasticsearch_bulk"];
    let created = now - rng.random_range(0..=30 * DAY);
    let operations = (0..rng.random_range(2..=4))
        .map(|i| {
            let op = OPS[rng.random_range(0..OPS.len())];
            match op {
                "elasticsearch_reader" => json!({ "_op": op, "index": format!("logs-{i}"), "size": 5000 }),
                "elasticsearch_bulk" => json!({ "_op": op, "index": "out", "size": 1000 }),
                _ => json!({ "_op": op }),
            }
        })
        .collect();
    Job {
        job_id: uuid(rng),
        name: format!("job_{}", NAMES[rng.random_range(0..NAMES.len())]),
        lifecycle: if rng.random::<bool>() {
            "once"
        } else {
            "persistent"
        },
        workers: rng.random_range(1..=20),
        operations,
        created,
        updated: (created + rng.random_range(0..=DAY)).min(now),
        active: rng.random::<bool>(),
    }
}

/// ts-topy's age mix for a living execution.
fn draw_age(rng: &mut StdRng) -> Millis {
    let roll = rng.random::<f64>();
    if roll < 0.20 {
        rng.random_range(0..10 * SECOND)
    } else if roll < 0.35 {
        rng.random_range(10 * SECOND..5 * MINUTE)
    } else if roll < 0.55 {
        rng.random_range(5 * MINUTE..DAY)
    } else {
        rng.random_range(DAY..90 * DAY)
    }
}

/// Where a living execution of `age` starts: young ones walk the initial steps from creation;
/// older ones are mostly running, a few recovering, failing, paused or stopping mid-phase.
fn draw_living_start(rng: &mut StdRng, now: Millis, age: Millis, timing: &Timing) -> Phase {
    let created = now - age;
    if age < 10 * SECOND {
        return Phase {
            status: ExStatus::Pending,
            since: created,
        };
    }
    let running_since = created + timing.pending_ms + timing.scheduling_ms + timing.initializing_ms;
    let roll = rng.random::<f64>();
    let (weights, stopping): (&[(ExStatus, f64)], bool) = if age < MINUTE {
        (
            &[
                (ExStatus::Recovering, 0.04),
                (ExStatus::Failing, 0.03),
                (ExStatus::Paused, 0.03),
            ],
            age >= 30 * SECOND,
        )
    } else {
        (
            &[
                (ExStatus::Paused, 0.02),
                (ExStatus::Recovering, 0.005),
                (ExStatus::Failing, 0.005),
            ],
            false,
        )
    };
    let mut acc = 0.0;
    for &(status, weight) in weights
        .iter()
        .chain(stopping.then_some(&(ExStatus::Stopping, 0.03)))
    {
        acc += weight;
        if roll < acc {
            let phase_len = match status {
                ExStatus::Recovering => timing.recovering_ms,
                ExStatus::Failing => timing.failing_ms,
                ExStatus::Stopping => timing.stopping_ms,
                _ => age,
            };
            // Mid-phase, entered no earlier than when it started running.
            let into = rng.random_range(0..phase_len.min(now - running_since).max(1));
            return Phase {
                status,
                since: (now - into).max(running_since),
            };
        }
    }
    Phase {
        status: ExStatus::Running,
        since: running_since,
    }
}

fn draw_execution(rng: &mut StdRng, job_index: usize, job: &Job, created: Millis, start: Phase) -> Execution {
    let workers = job.workers.max(1);
    let joined = if rng.random::<f64>() < 0.95 {
        workers
    } else {
        workers.saturating_sub(rng.random_range(1..=3)).max(1)
    };
    let active = if rng.random::<f64>() < 0.95 {
        joined
    } else {
        joined.saturating_sub(rng.random_range(1..=2)).max(1)
    };
    let disconnected = rng.random_range(0..=(joined / 4).min(2));
    let ex_id = uuid(rng);
    Execution {
        id_bits: u64::from_str_radix(&ex_id[..8], 16).unwrap_or(0),
        ex_id,
        job: job_index,
        created,
        start,
        stop_at: None,
        analytics: rng.random::<bool>(),
        max_retries: rng.random_range(0..=5),
        probation_window: rng.random_range(0..=300_000),
        slicers: rng.random_range(1..=3),
        has_errors: rng.random::<f64>() < 0.1,
        slicer_hostname: format!("worker-{}.example.com", rng.random_range(1..=20)),
        slicer_port: rng.random_range(45_678..=45_700),
        workers_joined: joined,
        workers_active: active,
        workers_disconnected: disconnected,
        workers_reconnected: rng.random_range(0..=disconnected),
        fail_ratio: if rng.random::<f64>() < 0.9 {
            0.0
        } else {
            rng.random_range(0.0005..0.005)
        },
        subslice_factor: rng.random_range(1.0..1.5),
        slice_range_expansion: rng.random_range(0..=10),
        subslice_by_key: rng.random_range(0..=100),
        queuing_complete_after: rng
            .random::<bool>()
            .then(|| rng.random_range(MINUTE..=60 * MINUTE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_000_000_000;

    #[test]
    fn the_same_seed_draws_the_same_cluster() {
        let a = World::generate(7, NOW, Timing::default());
        let b = World::generate(7, NOW, Timing::default());
        let ids = |w: &World| w.executions.iter().map(|e| e.ex_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&World::generate(8, NOW, Timing::default())));
    }

    #[test]
    fn at_most_one_living_execution_per_job_at_any_time() {
        for seed in 0..20 {
            let mut world = World::generate(seed, NOW, Timing::default());
            for hour in 0..6 {
                let now = NOW + hour * HOUR;
                world.advance(now);
                for job in 0..world.jobs.len() {
                    let living = world
                        .executions
                        .iter()
                        .filter(|e| e.job == job && e.status_at(now, &world.timing).is_living())
                        .count();
                    assert!(
                        living <= 1,
                        "seed {seed}: job {job} has {living} living executions"
                    );
                }
            }
        }
    }

    #[test]
    fn events_do_not_depend_on_how_often_anyone_looks() {
        let mut often = World::generate(3, NOW, Timing::default());
        let mut once = often.clone();
        for minute in 0..120 {
            often.advance(NOW + minute * MINUTE);
        }
        once.advance(NOW + 119 * MINUTE);
        let view = |w: &World| {
            w.executions
                .iter()
                .map(|e| (e.ex_id.clone(), e.status_at(NOW + 119 * MINUTE, &w.timing)))
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&often), view(&once));
        assert!(
            often.executions.len() > World::generate(3, NOW, Timing::default()).executions.len()
                || often.executions.iter().any(|e| e.stop_at.is_some()),
            "two hours bring some events"
        );
    }

    #[test]
    fn uuids_are_dashed_version_4() {
        let mut rng = StdRng::seed_from_u64(1);
        let id = uuid(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}
