//! `bench streams-floor` (started by `bench streams --floor`, not by hand): the least a server
//! can do for the streams bench's requests, so the real servers' figures can be read against
//! what this machine and this load generator allow at all.
//!
//! One thread, one epoll loop (mio), canned answers and no checks: PUT answers 201, DELETE 204;
//! POST appends its body to the path's bytes and answers 204 with `Stream-Next-Offset`; GET
//! answers everything from its offset with `Stream-Up-To-Date`, or — with `live=long-poll` at
//! the tail — waits for the next POST. With `--data-dir`, the POSTs of one loop turn are written
//! to one file (space reserved ahead in zeros) with one write and one `fdatasync` before any of
//! them, or any reader they wake, is answered. It is not a Durable Streams server.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::Context;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[derive(clap::Args)]
pub struct Args {
    /// Make appends durable in a file under this directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const LISTENER: Token = Token(usize::MAX);
/// The file grows in steps of zeros this big, so a sync flushes data, not a new size.
const RESERVE_STEP: u64 = 16 * 1024 * 1024;

struct Connection {
    socket: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already sent.
    sent: usize,
}

#[derive(Default)]
struct StreamBytes {
    bytes: Vec<u8>,
    /// Long-polls parked at the tail: connection and offset.
    parked: Vec<(Token, usize)>,
}

/// The durable log: every append's bytes, one after another.
struct Log {
    file: File,
    len: u64,
    reserved: u64,
    pending: Vec<u8>,
}

impl Log {
    fn sync(&mut self) -> std::io::Result<()> {
        let end = self.len + self.pending.len() as u64;
        while end > self.reserved {
            self.file
                .write_all_at(&vec![0; RESERVE_STEP as usize], self.reserved)?;
            self.reserved += RESERVE_STEP;
            self.file.sync_all()?;
        }
        self.file.write_all_at(&self.pending, self.len)?;
        self.file.sync_data()?;
        self.len = end;
        self.pending.clear();
        Ok(())
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    offset: Option<usize>,
    long_poll: bool,
    body: Vec<u8>,
}

pub fn serve(args: Args) -> anyhow::Result<()> {
    let mut log = match &args.data_dir {
        Some(dir) => Some(Log {
            file: File::create(dir.join("floor.log")).context("creating the log")?,
            len: 0,
            reserved: 0,
            pending: Vec::new(),
        }),
        None => None,
    };
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind("127.0.0.1:0".parse()?)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("streams floor listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;

    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut streams: HashMap<String, StreamBytes> = HashMap::new();
    let mut next_token = 0;
    let mut events = Events::with_capacity(1024);
    loop {
        poll.poll(&mut events, None)?;
        // Answers to this turn's appends, and the streams they moved, wait for the sync.
        let mut acks: Vec<(Token, Vec<u8>)> = Vec::new();
        let mut moved: Vec<String> = Vec::new();
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut socket, _)) = listener.accept() {
                    socket.set_nodelay(true)?;
                    let token = Token(next_token);
                    next_token += 1;
                    poll.registry()
                        .register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
                    let connection = Connection {
                        socket,
                        input: Vec::new(),
                        output: Vec::new(),
                        sent: 0,
                    };
                    connections.insert(token, connection);
                }
                continue;
            }
            let token = event.token();
            let Some(connection) = connections.get_mut(&token) else {
                continue;
            };
            if !fill(connection) {
                connections.remove(&token);
                continue;
            }
            while let Some(request) = parse(&mut connection.input) {
                let answer = match request.method.as_str() {
                    "PUT" => {
                        streams.entry(request.path).or_default();
                        Some(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec())
                    }
                    "DELETE" => {
                        streams.remove(&request.path);
                        Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
                    }
                    "POST" => {
                        let stream = streams.entry(request.path.clone()).or_default();
                        stream.bytes.extend_from_slice(&request.body);
                        if let Some(log) = &mut log {
                            log.pending.extend_from_slice(&request.body);
                        }
                        let tail = stream.bytes.len();
                        let ack =
                            format!("HTTP/1.1 204 No Content\r\nStream-Next-Offset: {tail:020}\r\n\r\n");
                        acks.push((token, ack.into_bytes()));
                        moved.push(request.path);
                        None
                    }
                    _ => {
                        let stream = streams.entry(request.path).or_default();
                        let from = request.offset.unwrap_or(0).min(stream.bytes.len());
                        if request.long_poll && from == stream.bytes.len() {
                            stream.parked.push((token, from));
                            None
                        } else {
                            Some(data(&stream.bytes, from))
                        }
                    }
                };
                if let Some(answer) = answer {
                    connection.output.extend_from_slice(&answer);
                }
            }
            if !flush(connection) {
                connections.remove(&token);
            }
        }
        if acks.is_empty() {
            continue;
        }
        if let Some(log) = &mut log {
            log.sync().context("syncing the log")?;
        }
        for path in moved {
            let Some(stream) = streams.get_mut(&path) else {
                continue;
            };
            for (token, from) in std::mem::take(&mut stream.parked) {
                if let Some(connection) = connections.get_mut(&token) {
                    connection.output.extend_from_slice(&data(&stream.bytes, from));
                    flush(connection);
                }
            }
        }
        for (token, ack) in acks {
            if let Some(connection) = connections.get_mut(&token) {
                connection.output.extend_from_slice(&ack);
                flush(connection);
            }
        }
    }
}

/// A 200 with the bytes from `from` to the tail.
fn data(bytes: &[u8], from: usize) -> Vec<u8> {
    let body = &bytes[from..];
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nStream-Next-Offset: {:020}\r\nStream-Up-To-Date: true\r\n\
         Content-Length: {}\r\n\r\n",
        bytes.len(),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// Reads all that has arrived; false when the peer is gone.
fn fill(connection: &mut Connection) -> bool {
    let mut buffer = [0; 64 * 1024];
    loop {
        match connection.socket.read(&mut buffer) {
            Ok(0) => return false,
            Ok(n) => connection.input.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Sends what the socket takes; the rest goes when it is writable again. False when the peer
/// is gone.
fn flush(connection: &mut Connection) -> bool {
    while connection.sent < connection.output.len() {
        match connection.socket.write(&connection.output[connection.sent..]) {
            Ok(n) => connection.sent += n,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    connection.output.clear();
    connection.sent = 0;
    true
}

/// Takes one whole request off the front of `input`, if one has arrived.
fn parse(input: &mut Vec<u8>) -> Option<Request> {
    let head_end = input.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&input[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if input.len() < head_end + length {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut offset = None;
    let mut long_poll = false;
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        match key {
            "offset" => offset = value.parse::<usize>().ok(),
            "live" => long_poll = value == "long-poll",
            _ => {}
        }
    }
    let request = Request {
        method,
        path: path.to_owned(),
        offset,
        long_poll,
        body: input[head_end..head_end + length].to_vec(),
    };
    input.drain(..head_end + length);
    Some(request)
}
