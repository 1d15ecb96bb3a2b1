//! Limits as a remote API sees them: call start times never exceed the rate quota in any
//! window, concurrency never exceeds its cap, and 503s shrink concurrency (AIMD).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tem_core::limit::Quota;
use tem_core::{Jitter, Limits, NewBatch, NewTask, RetryPolicy, TaskContext, TaskError, WorkerOptions};

/// Records when each call starts and how many run at once.
#[derive(Default)]
struct Probe {
    starts: Mutex<Vec<Instant>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Probe {
    fn enter(&self) {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run_probe(
    backend: common::Backend,
    quota: Quota,
    tasks: u32,
    concurrency: usize,
    work: Duration,
) -> (Arc<Probe>, Duration) {
    let (_dir, engine) = common::engine(backend).await;
    let batch = engine.create_batch(NewBatch::new("rate", "t")).await.unwrap();
    engine
        .enqueue(batch.id, (0..tasks).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    let probe = Arc::new(Probe::default());
    let seen = probe.clone();
    let stalls = common::StallMonitor::start();
    let report = engine
        .worker(WorkerOptions::default().concurrency(concurrency).batch(batch.id))
        .limit("call", Limits::rate(quota))
        .handle("call", move |_: u32, _| {
            let probe = seen.clone();
            async move {
                probe.enter();
                tokio::time::sleep(work).await;
                probe.leave();
                Ok::<_, TaskError>(())
            }
        })
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, u64::from(tasks));
    (probe, stalls.worst())
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn call_starts_never_exceed_the_quota_in_any_window(backend) {
        let quota = Quota::new(10, Duration::from_millis(500)).unwrap();
        let (probe, stall) = run_probe(backend, quota, 40, 8, Duration::from_millis(5)).await;
        let starts = probe.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 40);
        let worst = common::max_in_window(&starts, common::shrunk(quota.period, stall));
        assert!(worst <= 10, "{worst} calls started within one 500 ms window (stall {stall:?})");
        // Evenly paced, no initial burst: the first ten need at least nine intervals.
        assert!(
            starts[9] - starts[0] + stall >= Duration::from_millis(450),
            "first ten in {:?} (stall {stall:?})",
            starts[9] - starts[0]
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_explicit_burst_goes_at_once_and_still_respects_the_window(backend) {
        let quota = Quota::new(10, Duration::from_millis(500))
            .unwrap()
            .with_burst(5)
            .unwrap();
        let (probe, stall) = run_probe(backend, quota, 30, 8, Duration::from_millis(5)).await;
        let starts = probe.starts.lock().unwrap().clone();
        let worst = common::max_in_window(&starts, common::shrunk(quota.period, stall));
        assert!(worst <= 10, "{worst} calls started within one 500 ms window (stall {stall:?})");
        assert!(
            starts[4] - starts[0] < Duration::from_millis(100) + stall,
            "the burst of five went together (stall {stall:?})"
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_is_a_hard_cap(backend) {
        let quota = Quota::per_second(100_000).unwrap();
        let (probe, _) = run_probe(backend, quota, 60, 3, Duration::from_millis(20)).await;
        assert_eq!(probe.peak.load(Ordering::SeqCst), 3);
    }
}

async fn overload_then_measure(backend: common::Backend, adaptive: bool) -> (usize, Duration) {
    let (_dir, engine) = common::engine(backend).await;
    let retry = RetryPolicy {
        max_attempts: 2,
        base: Duration::from_millis(50),
        cap: Duration::from_millis(50),
        jitter: Jitter::None,
    };
    let batch = engine
        .create_batch(NewBatch::new("aimd", "t").retry(retry))
        .await
        .unwrap();
    engine
        .enqueue(batch.id, (0..8).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    let probe = Arc::new(Probe::default());
    let seen = probe.clone();
    // The whole first wave is in flight before any of it hears "overloaded".
    let wave = Arc::new(tokio::sync::Barrier::new(8));
    let stalls = common::StallMonitor::start();
    let mut options = WorkerOptions::default().concurrency(8).batch(batch.id);
    if !adaptive {
        options = options.fixed_concurrency();
    }
    engine
        .worker(options)
        .handle("call", move |_: u32, ctx: TaskContext| {
            let probe = seen.clone();
            let wave = wave.clone();
            async move {
                if ctx.attempt == 1 {
                    wave.wait().await;
                    return Err(TaskError::overloaded(None).with_status(503));
                }
                probe.enter();
                tokio::time::sleep(Duration::from_millis(100)).await;
                probe.leave();
                Ok(())
            }
        })
        .run_until_idle()
        .await
        .unwrap();
    (probe.peak.load(Ordering::SeqCst), stalls.worst())
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wave_of_503s_halves_concurrency_once(backend) {
        // The retries run 100 ms each: they overlap fully unless a stall of that order split
        // them, and only then may the peak fall short (never exceed).
        let (fixed, stall) = overload_then_measure(backend, false).await;
        assert!(fixed <= 8);
        if stall < Duration::from_millis(50) {
            assert_eq!(fixed, 8, "control: fixed concurrency retries all at once");
        }
        let (adaptive, stall) = overload_then_measure(backend, true).await;
        assert!(adaptive <= 4, "adaptive: halved once for the whole wave, {adaptive} at once");
        if stall < Duration::from_millis(50) {
            assert_eq!(adaptive, 4, "adaptive: halved once, not twice");
        }
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fast_quota_keeps_its_window_and_its_pace(backend) {
        // 1,000 calls per second: faster than tokio's 1 ms timer can space one by one.
        let quota = Quota::new(100, Duration::from_millis(100)).unwrap();
        let (probe, stall) = run_probe(backend, quota, 600, 32, Duration::from_millis(1)).await;
        let starts = probe.starts.lock().unwrap().clone();
        let worst = common::max_in_window(&starts, common::shrunk(quota.period, stall));
        assert!(worst <= 100, "{worst} calls started within one 100 ms window (stall {stall:?})");
        // 600 calls at 1,000/s start within ~0.5 s of the first; twice that means the limiter,
        // not the quota, set the pace.
        let span = *starts.iter().max().unwrap() - *starts.iter().min().unwrap();
        assert!(
            span < Duration::from_millis(1000) + stall,
            "600 calls started over {span:?} (stall {stall:?})"
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_weighted_budget_is_spent_by_cost_and_corrected_by_the_reported_cost(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("budget", "t")).await.unwrap();
        // Estimated at 100 tokens each; the API reports that even tasks really cost 20.
        engine
            .enqueue(
                batch.id,
                (0..12u32).map(|i| NewTask::new("llm", &i).unwrap().cost(100)),
            )
            .await
            .unwrap();
        let spent = Arc::new(Mutex::new(Vec::new()));
        let seen = spent.clone();
        let budget = Quota::new(400, Duration::from_millis(500)).unwrap();
        let stalls = common::StallMonitor::start();
        engine
            .worker(WorkerOptions::default().concurrency(8).batch(batch.id))
            .limit(
                "llm",
                Limits {
                    budget: Some(budget),
                    ..Limits::default()
                },
            )
            .handle("llm", move |i: u32, ctx: TaskContext| {
                let seen = seen.clone();
                async move {
                    let cost = if i.is_multiple_of(2) { 20 } else { 100 };
                    seen.lock().unwrap().push((Instant::now(), cost));
                    ctx.report_cost(cost);
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        let stall = stalls.worst();
        let spent = spent.lock().unwrap().clone();
        assert_eq!(spent.len(), 12);
        // In any 500 ms window, what was spent stays within the budget plus one task's estimate
        // (the window shortened by the stall this run measured, see common::shrunk).
        let period = common::shrunk(budget.period, stall);
        for &(start, _) in &spent {
            let window: u64 = spent
                .iter()
                .filter(|&&(t, _)| t >= start && t < start + period)
                .map(|&(_, cost)| cost)
                .sum();
            assert!(window <= 400 + 100, "{window} tokens within one window");
        }
        // Corrections made room: 720 real tokens at 400 per 500 ms need well under the 1.5 s the
        // estimates alone (1,200 tokens) would have taken.
        let span = spent.last().unwrap().0 - spent.first().unwrap().0;
        assert!(
            span < Duration::from_millis(1300) + stall,
            "took {span:?} (stall {stall:?})"
        );
    }
}
