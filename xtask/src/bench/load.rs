//! A small HTTP/1.1 load generator: `connections` keep-alive connections, each sending the same
//! GET back to back for a fixed time. Raw TCP and a pre-built request keep the generator's own
//! cost low, since it shares the machine with the server it measures. [`Connection`], the
//! client underneath, is shared with benches that script their own requests.

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

/// `POST path` with a JSON `body`, as a request for [`run_request`].
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tem-bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs the load of a pre-built `request`; every connection stops at `duration`.
pub async fn run_request(
    addr: SocketAddr,
    request: Vec<u8>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
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
    let mut connection = Connection::open(addr, 16 * 1024).await?;
    let mut load = Load::default();
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        connection.send(request).await?;
        let response = connection.response(&[]).await?;
        load.requests += 1;
        if !(200..300).contains(&response.status) {
            load.non_2xx += 1;
        }
        latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok((load, latencies))
}

/// One keep-alive HTTP/1.1 connection over raw TCP. Requests go out pre-built, as they are; a
/// response is read just far enough to know its status, the few headers the caller asks for,
/// and where it ends. Its body is counted and dropped, never kept: a catch-up read can be
/// many MiB, and copying it anywhere would only slow the generator down.
pub struct Connection {
    stream: TcpStream,
    buffer: Box<[u8]>,
    /// The bytes read but not yet consumed are `buffer[start..end]`.
    start: usize,
    end: usize,
}

/// What one response said.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Body bytes (after removing chunked framing).
    pub body_len: usize,
    /// The values of the headers asked for, in the order asked (`None` when absent).
    pub headers: Vec<Option<String>>,
}

impl Connection {
    /// Connects with Nagle off: requests are written whole, so waiting only adds latency.
    /// `buffer` bytes bound a response head and are the unit in which bodies are read.
    pub async fn open(addr: SocketAddr, buffer: usize) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: vec![0; buffer].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(request).await?;
        Ok(())
    }

    /// Reads one response (to anything but HEAD), collecting the headers named in `wanted`.
    pub async fn response(&mut self, wanted: &[&str]) -> anyhow::Result<Response> {
        let head_end = loop {
            if let Some(at) = find(&self.buffer[self.start..self.end], b"\r\n\r\n") {
                break self.start + at + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[self.start..head_end])?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("a response without a status line"))?;
        let mut length = None;
        let mut chunked = false;
        let mut headers = vec![None; wanted.len()];
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
            if let Some(i) = wanted.iter().position(|w| name.eq_ignore_ascii_case(w)) {
                headers[i] = Some(value.to_owned());
            }
        }
        self.start = head_end;
        let body_len = if status == 204 || status == 304 {
            0
        } else if chunked {
            self.skip_chunked().await?
        } else {
            let length = length.ok_or_else(|| {
                anyhow::anyhow!("a {status} response with neither Content-Length nor chunks")
            })?;
            self.skip(length).await?;
            length
        };
        Ok(Response {
            status,
            body_len,
            headers,
        })
    }

    /// Skips a chunked body (and any trailers), returning its length.
    async fn skip_chunked(&mut self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let end = self.line_end().await?;
            let line = std::str::from_utf8(&self.buffer[self.start..end])?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)?;
            self.start = end + 2;
            if size == 0 {
                // Trailers, if any, then an empty line.
                loop {
                    let end = self.line_end().await?;
                    let empty = end == self.start;
                    self.start = end + 2;
                    if empty {
                        return Ok(total);
                    }
                }
            }
            // The chunk and the CRLF after it.
            self.skip(size + 2).await?;
            total += size;
        }
    }

    /// Where the next CRLF starts, once a whole line is buffered.
    async fn line_end(&mut self) -> anyhow::Result<usize> {
        loop {
            if let Some(at) = find(&self.buffer[self.start..self.end], b"\r\n") {
                return Ok(self.start + at);
            }
            self.fill().await?;
        }
    }

    /// Consumes `n` bytes, reading as needed.
    async fn skip(&mut self, mut n: usize) -> anyhow::Result<()> {
        loop {
            let here = n.min(self.end - self.start);
            self.start += here;
            n -= here;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Reads more, first moving the unconsumed bytes to the front of the buffer.
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        anyhow::ensure!(
            self.end < self.buffer.len(),
            "a response head or chunk line longer than {} bytes",
            self.buffer.len()
        );
        let n = self.stream.read(&mut self.buffer[self.end..]).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.end += n;
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
