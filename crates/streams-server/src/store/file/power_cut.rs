//! The file store on a simulated disk ([`super::sim_disk`]): power cuts at random points, a full
//! disk, a failed sync. What a SIGKILL test cannot see — a missing sync, a sync trusted after it
//! failed — shows here as a lost acknowledged append or a refused one that came back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::sim_disk::SimDisk;
use crate::clock::Clock;
use crate::error::StreamError;
use crate::offset::ReadFrom;
use crate::producer::ProducerTuple;
use crate::store::{CreateRequest, Store};
use crate::stream::{AppendRequest, Stream};

const TYPE: &str = "application/octet-stream";
const HEADER: usize = 13;

/// A self-describing body: `[S IIIII FFFFF]` (no spaces), `fill` filler bytes, `;`.
fn body(stream: u8, i: usize, fill: usize) -> Vec<u8> {
    let mut out = format!("[{}{i:05}{fill:05}]", stream as char).into_bytes();
    out.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, fill));
    out.push(b';');
    out
}

/// Splits a stream's content into whole bodies; panics on anything else.
fn bodies(content: &[u8]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < content.len() {
        let header = std::str::from_utf8(&content[at..(at + HEADER).min(content.len())])
            .unwrap_or_else(|_| panic!("foreign bytes at {at}"));
        assert!(
            header.len() == HEADER && header.starts_with('['),
            "partial or foreign bytes at {at}: {header:?}"
        );
        let i: usize = header[2..7].parse().expect("index");
        let fill: usize = header[7..12].parse().expect("fill");
        let whole = body(header.as_bytes()[1], i, fill);
        assert_eq!(
            content.get(at..at + whole.len()),
            Some(whole.as_slice()),
            "a partial body at {at}"
        );
        at += whole.len();
        found.push(whole);
    }
    found
}

async fn open(disk: &SimDisk, dir: &Path) -> Result<Store, crate::Error> {
    Store::open_dir_on(Arc::new(disk.clone()), dir, Vec::new(), None, Clock::system()).await
}

async fn create(store: &Store, path: &str) -> Arc<Stream> {
    let request = CreateRequest {
        content_type: Some(TYPE.into()),
        ..CreateRequest::default()
    };
    store.create(path, request).await.expect("create").stream
}

async fn append(
    stream: &Arc<Stream>,
    data: Vec<u8>,
    producer: Option<ProducerTuple>,
) -> Result<u64, StreamError> {
    let request = AppendRequest {
        content_type: Some(TYPE.into()),
        body: data,
        producer,
        ..AppendRequest::default()
    };
    stream
        .append(request, crate::ttl::now_ms())
        .await
        .map(|appended| appended.next.0)
}

fn content(stream: &Stream) -> Vec<u8> {
    stream.read(ReadFrom::Start, usize::MAX).expect("read").data
}

/// What an append was told.
#[derive(Debug)]
enum Told {
    /// Acknowledged, ending at this offset.
    Acked(u64),
    /// Refused, with nothing stored.
    Refused,
    /// An error that leaves the outcome open (the power went, or an undo failed).
    Unknown,
}

fn told(result: Result<u64, StreamError>) -> Told {
    match result {
        Ok(end) => Told::Acked(end),
        Err(error) => {
            let text = error.to_string();
            if text.contains("power") || text.contains("may or may not") {
                Told::Unknown
            } else {
                Told::Refused
            }
        }
    }
}

/// Checks a recovered stream against what its appenders were told.
fn check(seed: u64, path: &str, content: &[u8], appends: &[(Vec<u8>, Told)]) {
    let present = bodies(content);
    let mut seen = HashMap::new();
    for found in &present {
        let known = appends.iter().find(|(sent, _)| sent == found);
        let (_, told) = known.unwrap_or_else(|| panic!("seed {seed} {path}: a body nobody sent"));
        assert!(
            !matches!(told, Told::Refused),
            "seed {seed} {path}: a refused append is stored"
        );
        assert!(
            seen.insert(found.clone(), ()).is_none(),
            "seed {seed} {path}: stored twice"
        );
    }
    for (sent, told) in appends {
        if let Told::Acked(end) = told {
            let end = *end as usize;
            assert_eq!(
                content.get(end - sent.len()..end),
                Some(sent.as_slice()),
                "seed {seed} {path}: the acknowledged append ending at {end} is lost"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_power_cut_at_any_point() {
    let mut cuts = 0;
    for seed in 0..200u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = SimDisk::new(seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let store = open(&disk, dir.path()).await.expect("open");
        let paths = ["/a", "/b"];
        let streams = [create(&store, paths[0]).await, create(&store, paths[1]).await];
        disk.cut_power_at(rng.random_range(1..=60));
        // Some runs also see a failed sync (EIO, dirty pages dropped) before the cut.
        let failing_round = (seed % 3 == 0).then(|| rng.random_range(0..6));
        let mut told: [Vec<(Vec<u8>, Told)>; 2] = Default::default();
        let mut next = 0;
        for round in 0..12 {
            if failing_round == Some(round) {
                disk.fail_syncs(1);
            }
            let batch: Vec<_> = (0..rng.random_range(1..=6))
                .map(|_| {
                    let which = rng.random_range(0..2usize);
                    let data = body(b'a' + which as u8, next, rng.random_range(1..1500));
                    next += 1;
                    let stream = streams[which].clone();
                    let sent = data.clone();
                    (
                        which,
                        sent,
                        tokio::spawn(async move { append(&stream, data, None).await }),
                    )
                })
                .collect();
            for (which, sent, task) in batch {
                told[which].push((sent, self::told(task.await.expect("join"))));
            }
        }
        cuts += usize::from(disk.is_cut());
        let image = disk.power_cut_image();
        drop(streams);
        drop(store);

        let disk = SimDisk::from_image(image, seed);
        let store = open(&disk, dir.path())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        for (which, path) in paths.iter().enumerate() {
            let stream = store
                .lookup(path)
                .await
                .unwrap_or_else(|e| panic!("seed {seed} {path}: {e}"));
            let recovered = content(&stream);
            check(seed, path, &recovered, &told[which]);
            // The recovered stream takes appends right after its last whole record.
            let more = body(b'z', which, 10);
            let end = append(&stream, more.clone(), None)
                .await
                .expect("append after recovery");
            assert_eq!(end as usize, recovered.len() + more.len(), "seed {seed} {path}");
        }
    }
    assert!(cuts > 120, "most runs cut the power mid-way: {cuts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_with_507_and_the_stream_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SimDisk::new(1);
    let store = open(&disk, dir.path()).await.expect("open");
    let stream = create(&store, "/full").await;
    let producer = |seq| {
        Some(ProducerTuple {
            id: "p".into(),
            epoch: 0,
            seq,
        })
    };
    let mut acked = Vec::new();
    let mut seq = 0;
    // Fill the reserved space, then the disk: every append either lands or is refused whole.
    disk.set_capacity(Some(disk.used()));
    let refused = loop {
        let data = body(b'f', seq as usize, 3000);
        match append(&stream, data.clone(), producer(seq)).await {
            Ok(_) => acked.push(data),
            Err(error) => break error,
        }
        seq += 1;
        assert!(seq < 1000, "the disk never filled");
    };
    assert_eq!(refused.status(), 507, "{refused}");
    assert!(
        refused.to_string().contains("creating") || refused.to_string().contains("appending"),
        "{refused}"
    );
    assert_eq!(
        content(&stream),
        acked.concat(),
        "reads still work and show only what was acknowledged"
    );
    // Still full: still 507, and the refused seq is not remembered as written.
    let again = append(&stream, body(b'f', seq as usize, 3000), producer(seq)).await;
    assert_eq!(again.expect_err("still full").status(), 507);

    disk.set_capacity(None);
    let data = body(b'f', seq as usize, 3000);
    append(&stream, data.clone(), producer(seq))
        .await
        .expect("space is back");
    acked.push(data);
    assert_eq!(content(&stream), acked.concat());
    // The producer's state was undone with the data: its next seq follows the last accepted.
    let next = body(b'f', seq as usize + 1, 10);
    append(&stream, next.clone(), producer(seq + 1))
        .await
        .expect("next seq");
    acked.push(next);

    let image = disk.power_cut_image();
    drop(stream);
    drop(store);
    let store = open(&SimDisk::from_image(image, 1), dir.path())
        .await
        .expect("reopen");
    let stream = store.lookup("/full").await.expect("stream");
    assert_eq!(
        content(&stream),
        acked.concat(),
        "nothing acknowledged lost, nothing refused kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_undone_and_nothing_after_it_trusts_the_dropped_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SimDisk::new(2);
    let store = open(&disk, dir.path()).await.expect("open");
    let stream = create(&store, "/eio").await;
    let first = body(b'e', 0, 100);
    append(&stream, first.clone(), None).await.expect("first");
    disk.fail_syncs(1);
    let lost = append(&stream, body(b'e', 1, 100), None).await.expect_err("EIO");
    assert_eq!(lost.status(), 500, "{lost}");
    assert_eq!(content(&stream), first, "the failed append is not visible");
    let second = body(b'e', 2, 100);
    let end = append(&stream, second.clone(), None).await.expect("writes go on");
    assert_eq!(
        end as usize,
        first.len() + second.len(),
        "written where the failed one was"
    );

    let image = disk.power_cut_image();
    drop(stream);
    drop(store);
    let store = open(&SimDisk::from_image(image, 2), dir.path())
        .await
        .expect("reopen");
    let stream = store.lookup("/eio").await.expect("stream");
    assert_eq!(content(&stream), [first, second].concat());
}
