//! `live=sse`: a text/event-stream of `data` events, each followed — in the same write — by a
//! `control` event carrying the next offset, the cursor and whether the reader is caught up.
//!
//! Text and JSON go as UTF-8 (a JSON data event is one array); other types as base64, announced
//! by `Stream-SSE-Data-Encoding: base64`. Payloads are split on CR, LF and CRLF into `data:`
//! lines, so stored bytes can never forge an event. The connection ends after the final
//! control event of a closed stream, at shutdown, or after about a minute.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::content_type::Kind;
use crate::headers;
use crate::http::AppState;
use crate::offset::{Offset, ReadFrom};
use crate::options::ServerOptions;
use crate::stream::{Stream, Tail};

/// Starts an SSE response; events are produced as the reader consumes them.
pub fn respond(
    state: &AppState,
    stream: Arc<Stream>,
    from: ReadFrom,
    client_cursor: Option<String>,
) -> Response {
    let mut watch = stream.watch();
    let tail = *watch.borrow_and_update();
    let pos = from.position(tail.offset.0);
    let binary = stream.config.kind == Kind::Binary;
    let options = state.options.clone();
    let first_cursor = options
        .cursor
        .respond(client_cursor.as_deref(), SystemTime::now());
    let session = Session {
        ends_at: Instant::now() + options.sse_lifetime,
        stream,
        watch,
        pos,
        started: false,
        done: false,
        first_cursor,
        options,
        shutdown: state.shutdown.clone(),
    };
    let events = futures::stream::unfold(session, |mut session| async move {
        let event = session.next().await?;
        Some((Ok::<_, std::io::Error>(event), session))
    });
    let mut response = Response::new(Body::from_stream(events));
    *response.status_mut() = StatusCode::OK;
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if binary {
        out.insert(
            headers::STREAM_SSE_DATA_ENCODING,
            HeaderValue::from_static("base64"),
        );
    }
    response
}

struct Session {
    stream: Arc<Stream>,
    watch: watch::Receiver<Tail>,
    pos: u64,
    /// Whether any event has been sent (an idle start still owes the reader one control).
    started: bool,
    done: bool,
    first_cursor: u64,
    options: Arc<ServerOptions>,
    shutdown: CancellationToken,
    ends_at: Instant,
}

impl Session {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let tail = *self.watch.borrow_and_update();
            if self.pos < tail.offset.0 {
                let chunk = match self
                    .stream
                    .read(ReadFrom::At(Offset(self.pos)), self.options.max_read_bytes)
                {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        tracing::warn!(path = %self.stream.path, %error, "ending an SSE read");
                        return None;
                    }
                };
                self.pos = chunk.next.0;
                self.started = true;
                self.done = chunk.closed;
                let mut out = data_event(&self.stream, chunk.data);
                out.extend_from_slice(&self.control(chunk.up_to_date, chunk.closed));
                return Some(out.into());
            }
            if tail.closed {
                self.done = true;
                return Some(self.control(true, true).into());
            }
            if !self.started {
                self.started = true;
                return Some(self.control(true, false).into());
            }
            tokio::select! {
                changed = self.watch.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = tokio::time::sleep(self.options.long_poll_timeout) => {
                    return Some(self.control(true, false).into());
                }
                () = tokio::time::sleep_until(self.ends_at) => return None,
                () = self.shutdown.cancelled() => return None,
            }
        }
    }

    fn control(&self, up_to_date: bool, closed: bool) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("streamNextOffset".into(), Offset(self.pos).to_string().into());
        if closed {
            body.insert("streamClosed".into(), true.into());
        } else {
            let cursor = self
                .first_cursor
                .max(self.options.cursor.current(SystemTime::now()));
            body.insert("streamCursor".into(), cursor.to_string().into());
        }
        if up_to_date {
            body.insert("upToDate".into(), true.into());
        }
        let mut out = b"event: control\ndata:".to_vec();
        out.extend_from_slice(serde_json::Value::Object(body).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// One `data` event holding a chunk, encoded for the stream's type.
fn data_event(stream: &Stream, stored: Vec<u8>) -> Vec<u8> {
    let text = match stream.config.kind {
        Kind::Binary => base64::engine::general_purpose::STANDARD.encode(&stored),
        Kind::Json | Kind::Text => String::from_utf8_lossy(&stream.render(stored)).into_owned(),
    };
    let mut out = Vec::with_capacity(text.len() + 32);
    out.extend_from_slice(b"event: data\n");
    for line in lines(&text) {
        out.extend_from_slice(b"data:");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Splits on CRLF, CR and LF alike.
fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['\r', '\n']) {
        out.push(&rest[..at]);
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_split_on_every_line_ending() {
        assert_eq!(lines("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(lines("x\n\ny"), ["x", "", "y"]);
        assert_eq!(lines(""), [""]);
    }
}
