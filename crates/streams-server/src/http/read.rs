//! GET: catch-up reads, and the entry to the live modes.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Query, gzip};
use crate::error::StreamError;
use crate::headers;
use crate::live::{long_poll, sse};
use crate::offset::ReadFrom;
use crate::stream::{Chunk, Stream};

pub async fn get(
    state: &AppState,
    path: &str,
    map: &HeaderMap,
    query: &Query,
) -> Result<Response, StreamError> {
    let from = ReadFrom::from_query(&query.offsets.iter().map(String::as_str).collect::<Vec<_>>())?;
    let stream = state.store.lookup(path).await?;
    stream.touch(state.store.now_ms());
    match query.live.as_deref() {
        None | Some("") => catch_up(
            &stream,
            from.unwrap_or(ReadFrom::Start),
            state.options.max_read_bytes,
            map,
        ),
        Some(mode @ ("long-poll" | "sse")) => {
            let from = from.ok_or_else(|| {
                StreamError::bad_request(
                    "offset",
                    format!("live={mode} needs an offset (-1, now, or a Stream-Next-Offset)"),
                )
            })?;
            if mode == "sse" {
                Ok(sse::respond(state, stream, from, query.cursor.clone()))
            } else {
                long_poll::respond(state, stream, from, query.cursor.as_deref(), gzip::accepted(map)).await
            }
        }
        Some(_) => Err(StreamError::bad_request("live", "live must be long-poll or sse")),
    }
}

fn catch_up(stream: &Stream, from: ReadFrom, max: usize, map: &HeaderMap) -> Result<Response, StreamError> {
    let chunk = stream.read(from, max)?;
    if from == ReadFrom::Now {
        let mut response = data_response(stream, chunk, StatusCode::OK, gzip::accepted(map));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(response);
    }
    let etag = format!(
        "\"{}:{}:{}{}\"",
        stream.id,
        chunk.start.0,
        chunk.next.0,
        if chunk.closed { ":c" } else { "" }
    );
    let not_modified =
        headers::text(map, header::IF_NONE_MATCH.as_str()).is_some_and(|sent| sent.trim() == etag);
    let cache = if chunk.up_to_date {
        "no-cache"
    } else {
        // Bytes before the tail never change: caches may keep whole historical chunks.
        "public, max-age=60, stale-while-revalidate=300"
    };
    let mut response = if not_modified {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        add_position_headers(response.headers_mut(), &chunk);
        response
    } else {
        data_response(stream, chunk, StatusCode::OK, gzip::accepted(map))
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

/// A response carrying a chunk: its bytes as the client sees them (gzipped when large and
/// `gzip` is accepted) and its position headers.
pub fn data_response(stream: &Stream, chunk: Chunk, status: StatusCode, gzip: bool) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let out = response.headers_mut();
    if let Ok(content_type) = HeaderValue::from_str(&stream.config.content_type) {
        out.insert(header::CONTENT_TYPE, content_type);
    }
    add_position_headers(out, &chunk);
    let body = gzip::encode(stream.render(chunk.data), gzip, response.headers_mut());
    *response.body_mut() = Body::from(body);
    response
}

fn add_position_headers(out: &mut HeaderMap, chunk: &Chunk) {
    out.insert(headers::STREAM_NEXT_OFFSET, headers::offset_value(chunk.next));
    if chunk.up_to_date {
        out.insert(headers::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    if chunk.closed {
        out.insert(headers::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
}
