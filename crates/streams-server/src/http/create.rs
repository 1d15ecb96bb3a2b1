//! PUT: create a stream (or fork one), or confirm an identical one exists.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::StreamError;
use crate::fork::ForkRequest;
use crate::headers;
use crate::store::CreateRequest;
use crate::ttl::Lifetime;

pub async fn put(
    state: &AppState,
    path: &str,
    uri: &Uri,
    map: &HeaderMap,
    body: Vec<u8>,
) -> Result<Response, StreamError> {
    let lifetime = Lifetime::from_headers(
        headers::text(map, headers::STREAM_TTL),
        headers::text(map, headers::STREAM_EXPIRES_AT),
    )?;
    let request = CreateRequest {
        content_type: headers::text(map, header::CONTENT_TYPE.as_str()).map(str::to_owned),
        lifetime,
        closed: headers::is_true(map, headers::STREAM_CLOSED),
        body,
        fork: ForkRequest::from_headers(map)?,
    };
    let created = state.store.create(path, request).await?;
    let stream = created.stream;
    let tail = stream.tail();
    let mut response = if created.new {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::OK.into_response()
    };
    let out = response.headers_mut();
    if created.new {
        let host = headers::text(map, header::HOST.as_str())
            .or(uri.authority().map(|a| a.as_str()))
            .unwrap_or("127.0.0.1");
        if let Ok(location) = HeaderValue::from_str(&format!("http://{host}{path}")) {
            out.insert(header::LOCATION, location);
        }
    }
    if let Ok(content_type) = HeaderValue::from_str(&stream.config.content_type) {
        out.insert(header::CONTENT_TYPE, content_type);
    }
    out.insert(headers::STREAM_NEXT_OFFSET, headers::offset_value(tail.offset));
    if tail.closed {
        out.insert(headers::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
