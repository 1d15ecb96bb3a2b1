//! `live=long-poll`: answer at once when there is data past the offset, else wait for an append
//! (200), the close (204 + `Stream-Closed`), or the timeout (204).

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::StreamError;
use crate::headers;
use crate::http::AppState;
use crate::http::read::data_response;
use crate::offset::{Offset, ReadFrom};
use crate::stream::{Stream, Tail};

pub async fn respond(
    state: &AppState,
    stream: Arc<Stream>,
    from: ReadFrom,
    client_cursor: Option<&str>,
    gzip: bool,
) -> Result<Response, StreamError> {
    let mut watch = stream.watch();
    let tail = *watch.borrow_and_update();
    let pos = from.position(tail.offset.0);
    let cursor = state.options.cursor.respond(client_cursor, SystemTime::now());
    let max = state.options.max_read_bytes;
    let deadline = tokio::time::sleep(state.options.long_poll_timeout);
    tokio::pin!(deadline);
    let mut tail = tail;
    loop {
        if pos < tail.offset.0 {
            let chunk = stream.read(ReadFrom::At(Offset(pos)), max)?;
            let mut response = data_response(&stream, chunk, StatusCode::OK, gzip);
            response
                .headers_mut()
                .insert(headers::STREAM_CURSOR, HeaderValue::from(cursor));
            return Ok(response);
        }
        if tail.closed {
            return Ok(empty(tail, None));
        }
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    return Ok(empty(tail, Some(cursor)));
                }
                tail = *watch.borrow_and_update();
            }
            () = &mut deadline => return Ok(empty(Tail { offset: Offset(pos), closed: false }, Some(cursor))),
            () = state.shutdown.cancelled() => return Ok(empty(Tail { offset: Offset(pos), closed: false }, Some(cursor))),
        }
    }
}

/// 204 at the tail: the timeout (with a cursor) or the end of a closed stream.
fn empty(tail: Tail, cursor: Option<u64>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(headers::STREAM_NEXT_OFFSET, headers::offset_value(tail.offset));
    out.insert(headers::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    if tail.closed {
        out.insert(headers::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let Some(cursor) = cursor {
        out.insert(headers::STREAM_CURSOR, HeaderValue::from(cursor));
    }
    response
}
