//! A small HTTP/1.1 load generator: `connections` keep-alive connections, each sending the same
//! GET back to back for a fixed time. Raw TCP and a pre-built request keep the generator's own
//! cost low, since it shares the machine with the server it measures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a load run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub requests: u64,
    /// Answers other than 2xx.
    pub non_2xx: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs the load; every connection stops at `duration`.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tem-bench\r\n\r\n").into_bytes();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move { connection(addr, &request, deadline).await })
        })
        .collect();
    let mut total = Load::default();
    let mut latencies = Vec::new();
    for task in tasks {
        let (load, mut samples) = task.await??;
        total.requests += load.requests;
        total.non_2xx += load.non_2xx;
        latencies.append(&mut samples);
    }
    total.seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    if !latencies.is_empty() {
        total.p50_us = latencies[latencies.len() / 2];
        total.p99_us = latencies[latencies.len() * 99 / 100];
    }
    Ok(total)
}

async fn connection(addr: SocketAddr, request: &[u8], deadline: Instant) -> anyhow::Result<(Load, Vec<u64>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut load = Load::default();
    let mut latencies = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut filled = 0;
    while Instant::now() < deadline {
        let sent = Instant::now();
        stream.write_all(request).await?;
        // Read one response: headers, then Content-Length bytes of body.
        let (status, body_start, length) = loop {
            if let Some(parsed) = parse_head(&buffer[..filled]) {
                break parsed;
            }
            if filled == buffer.len() {
                anyhow::bail!("response headers larger than {} bytes", buffer.len());
            }
            let n = stream.read(&mut buffer[filled..]).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            filled += n;
        };
        while filled < body_start + length {
            if filled == buffer.len() {
                buffer.resize(buffer.len() * 2, 0);
            }
            let n = stream.read(&mut buffer[filled..]).await?;
            anyhow::ensure!(n > 0, "the server closed the connection mid-body");
            filled += n;
        }
        // Keep whatever follows (nothing, without pipelining).
        buffer.copy_within(body_start + length..filled, 0);
        filled -= body_start + length;
        load.requests += 1;
        if !(200..300).contains(&status) {
            load.non_2xx += 1;
        }
        latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok((load, latencies))
}

/// Status, where the body starts, and its length, once the whole head is in `data`.
fn parse_head(data: &[u8]) -> Option<(u16, usize, usize)> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&data[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    Some((status, end, length))
}
