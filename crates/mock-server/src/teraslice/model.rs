//! What the API returns, in real Teraslice's shapes: UTC `…Z` timestamps with milliseconds,
//! dashed UUIDs, `_context: "job"`, controllers only for the running group, `_slicer_stats`
//! `{}` before running, live while running, frozen at the end.

use serde_json::{Value, json};

use super::generate::{Execution, Job, World};
use super::lifecycle::{ExStatus, Millis};

/// RFC 3339 in UTC with milliseconds, as Teraslice writes `_created`/`_updated`.
pub(crate) fn timestamp(ms: Millis) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

pub(crate) fn job(job: &Job) -> Value {
    json!({
        "name": job.name,
        "lifecycle": job.lifecycle,
        "workers": job.workers,
        "operations": job.operations,
        "job_id": job.job_id,
        "_created": timestamp(job.created),
        "_updated": timestamp(job.updated),
        "_context": "job",
        "active": job.active,
        "analytics": true,
        "assets": [],
        "autorecover": false,
        "max_retries": 3,
        "probation_window": 300_000,
        "slicers": 1,
        "apis": [],
    })
}

/// Slice counters at `now`: they grow with the time spent working and freeze at the end.
struct Counters {
    processed: u64,
    failed: u64,
    subslices: u64,
    queued: u64,
}

fn counters(world: &World, ex: &Execution, now: Millis) -> Counters {
    let phases = ex.phases_at(now, &world.timing);
    let mut working_ms: Millis = 0;
    for (i, phase) in phases.iter().enumerate() {
        let end = phases.get(i + 1).map_or(now, |next| next.since);
        if matches!(
            phase.status,
            ExStatus::Running | ExStatus::Recovering | ExStatus::Failing | ExStatus::Stopping
        ) {
            working_ms += (end - phase.since).max(0);
        }
    }
    let processed = (working_ms as f64 / 10_000.0 * ex.workers_active as f64).floor() as u64;
    let status = phases.last().map_or(ex.start.status, |p| p.status);
    Counters {
        processed,
        failed: (processed as f64 * ex.fail_ratio).floor() as u64,
        subslices: (processed as f64 * ex.subslice_factor).floor() as u64,
        queued: if status.is_running_group() {
            ex.workers_active
        } else {
            0
        },
    }
}

/// One controller's stats (an execution in the running group).
pub(crate) fn controller(world: &World, ex: &Execution, now: Millis) -> Value {
    let job = &world.jobs[ex.job];
    let c = counters(world, ex, now);
    json!({
        "ex_id": ex.ex_id,
        "job_id": job.job_id,
        "name": job.name,
        "workers_available": job.workers.saturating_sub(ex.workers_joined),
        "workers_active": ex.workers_active,
        "workers_joined": ex.workers_joined,
        "workers_reconnected": ex.workers_reconnected,
        "workers_disconnected": ex.workers_disconnected,
        "failed": c.failed,
        "subslices": c.subslices,
        "queued": c.queued,
        "slice_range_expansion": ex.slice_range_expansion,
        "processed": c.processed,
        "slicers": ex.slicers,
        "subslice_by_key": ex.subslice_by_key,
        "started": timestamp(ex.created),
    })
}

pub(crate) fn execution(world: &World, ex: &Execution, now: Millis) -> Value {
    let job = &world.jobs[ex.job];
    let phases = ex.phases_at(now, &world.timing);
    let current = phases.last().copied().unwrap_or(ex.start);
    let status = current.status;
    let slicer_stats = if status.is_initial() {
        json!({})
    } else {
        let mut stats = controller(world, ex, now);
        let object = stats.as_object_mut();
        if let Some(object) = object {
            for key in ["ex_id", "job_id", "name"] {
                object.remove(key);
            }
            if status.is_terminal() {
                object.insert(
                    "job_duration".into(),
                    json!((current.since - ex.created).max(0) / 1000),
                );
                let queued = ex
                    .queuing_complete_after
                    .map(|after| ex.created + after)
                    .filter(|at| *at <= current.since);
                object.insert("queuing_complete".into(), json!(queued.map(timestamp)));
            } else {
                object.insert("job_duration".into(), json!(0));
                object.insert("queuing_complete".into(), Value::Null);
            }
        }
        stats
    };
    // The slicer's host and port appear once it is initializing.
    let has_slicer = !matches!(status, ExStatus::Pending | ExStatus::Scheduling);
    let mut value = json!({
        "ex_id": ex.ex_id,
        "job_id": job.job_id,
        "name": job.name,
        "lifecycle": job.lifecycle,
        "analytics": ex.analytics,
        "max_retries": ex.max_retries,
        "probation_window": ex.probation_window,
        "slicers": ex.slicers,
        "workers": job.workers,
        "operations": job.operations,
        "_created": timestamp(ex.created),
        "_updated": timestamp(current.since),
        "_context": "ex",
        "_status": status.as_str(),
        "slicer_hostname": has_slicer.then(|| ex.slicer_hostname.clone()),
        "slicer_port": has_slicer.then_some(ex.slicer_port),
        "_has_errors": ex.has_errors || matches!(status, ExStatus::Failed | ExStatus::Failing),
        "_slicer_stats": slicer_stats,
        "metadata": {},
        "teraslice_version": super::TERASLICE_VERSION,
    });
    if status == ExStatus::Failed
        && let Some(object) = value.as_object_mut()
    {
        object.insert(
            "_failureReason".into(),
            json!("slice failures exceeded the retry limit"),
        );
    }
    value
}

/// `GET /v1/cluster/state`: a map of nodes by id. Workers are drawn from the executions that
/// have a controller, so this view agrees with the controllers and executions.
pub(crate) fn cluster_state(world: &World, now: Millis) -> Value {
    let mut active: Vec<Vec<Value>> = vec![Vec::new(); world.nodes.len()];
    let mut next_worker = 1u64;
    let mut place = |active: &mut Vec<Vec<Value>>, worker: Value| {
        // The first node with a free slot, round-robin from the last one used.
        let count = world.nodes.len();
        let start = usize::try_from(next_worker).unwrap_or(0) % count.max(1);
        for offset in 0..count {
            let n = (start + offset) % count;
            if (active[n].len() as u64) < world.nodes[n].total {
                let mut worker = worker;
                if let Some(object) = worker.as_object_mut() {
                    object.insert("worker_id".into(), json!(next_worker));
                    object.insert("pid".into(), json!(world.nodes[n].pid + next_worker));
                }
                active[n].push(worker);
                next_worker += 1;
                return;
            }
        }
    };
    if !world.nodes.is_empty() {
        place(&mut active, json!({ "assignment": "cluster_master" }));
        place(&mut active, json!({ "assignment": "assets_service" }));
    }
    for ex in &world.executions {
        if !ex.status_at(now, &world.timing).is_running_group() {
            continue;
        }
        let job_id = &world.jobs[ex.job].job_id;
        place(
            &mut active,
            json!({ "assignment": "execution_controller", "ex_id": ex.ex_id, "job_id": job_id }),
        );
        for _ in 0..ex.workers_active {
            place(
                &mut active,
                json!({ "assignment": "worker", "ex_id": ex.ex_id, "job_id": job_id }),
            );
        }
    }
    let nodes: serde_json::Map<String, Value> = world
        .nodes
        .iter()
        .zip(active)
        .map(|(node, active)| {
            let value = json!({
                "node_id": node.node_id,
                "hostname": node.hostname,
                "pid": node.pid,
                "node_version": "v22.14.0",
                "teraslice_version": super::TERASLICE_VERSION,
                "total": node.total,
                "state": "connected",
                "available": node.total - active.len() as u64,
                "active": active,
            });
            (node.node_id.clone(), value)
        })
        .collect();
    Value::Object(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teraslice::lifecycle::Timing;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_541_078_150_704), "2018-11-01T13:15:50.704Z");
    }

    #[test]
    fn counters_only_grow_and_freeze_at_the_end() {
        let now = 1_795_000_000_000;
        let world = World::generate(11, now, Timing::default());
        for ex in &world.executions {
            let mut last = 0;
            for minute in 0..30 {
                let at = now + minute * 60_000;
                let c = counters(&world, ex, at);
                assert!(c.processed >= last, "processed went down for {}", ex.ex_id);
                if ex.status_at(at, &world.timing).is_terminal() {
                    assert_eq!(
                        c.processed,
                        counters(&world, ex, at + 3_600_000).processed,
                        "frozen"
                    );
                }
                last = c.processed;
            }
        }
    }

    #[test]
    fn cluster_workers_never_exceed_a_nodes_slots() {
        let now = 1_795_000_000_000;
        for seed in 0..10 {
            let world = World::generate(seed, now, Timing::default());
            let state = cluster_state(&world, now);
            for node in state.as_object().unwrap().values() {
                let total = node["total"].as_u64().unwrap();
                let active = node["active"].as_array().unwrap().len() as u64;
                assert!(active <= total);
                assert_eq!(node["available"].as_u64().unwrap(), total - active);
            }
        }
    }
}
