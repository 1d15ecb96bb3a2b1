//! POST: append (and optionally close), with the protocol's checks in its order.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::StreamError;
use crate::headers;
use crate::producer::ProducerTuple;
use crate::stream::AppendRequest;

pub async fn post(
    state: &AppState,
    path: &str,
    map: &HeaderMap,
    body: Vec<u8>,
) -> Result<Response, StreamError> {
    let stream = state.store.lookup(path).await?;
    let producer = ProducerTuple::from_headers(map)?;
    let close = headers::is_true(map, headers::STREAM_CLOSED);
    if body.is_empty() && !close {
        return Err(StreamError::bad_request(
            "body",
            "an append needs a body (or Stream-Closed: true to close the stream)",
        ));
    }
    let content_type = headers::text(map, header::CONTENT_TYPE.as_str()).map(str::to_owned);
    if !body.is_empty() && content_type.is_none() {
        return Err(StreamError::bad_request(
            "content-type",
            "an append needs a Content-Type",
        ));
    }
    let now = state.store.now_ms();
    stream.touch(now);
    let has_body = !body.is_empty();
    let request = AppendRequest {
        content_type,
        body,
        close,
        seq: headers::text(map, headers::STREAM_SEQ).map(str::to_owned),
        producer,
    };
    let appended = stream.append(request, now).await?;
    // A newly accepted producer append with data is 200; everything else (plain appends,
    // duplicates, close-only) is 204.
    let status = if appended.producer.is_some() && !appended.duplicate && has_body {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    let mut response = status.into_response();
    let out = response.headers_mut();
    out.insert(headers::STREAM_NEXT_OFFSET, headers::offset_value(appended.next));
    if appended.closed {
        out.insert(headers::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let Some((epoch, seq)) = appended.producer {
        out.insert(headers::PRODUCER_EPOCH, HeaderValue::from(epoch));
        out.insert(headers::PRODUCER_SEQ, HeaderValue::from(seq));
    }
    Ok(response)
}
