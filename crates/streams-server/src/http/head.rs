//! HEAD: a stream's metadata. It never renews the TTL.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::StreamError;
use crate::headers;

pub async fn head(state: &AppState, path: &str) -> Result<Response, StreamError> {
    let stream = state.store.lookup(path).await?;
    let tail = stream.tail();
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    if let Ok(content_type) = HeaderValue::from_str(&stream.config.content_type) {
        out.insert(header::CONTENT_TYPE, content_type);
    }
    out.insert(headers::STREAM_NEXT_OFFSET, headers::offset_value(tail.offset));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let lifetime = &stream.config.lifetime;
    if let Some(ttl) = lifetime.ttl_secs {
        out.insert(headers::STREAM_TTL, HeaderValue::from(ttl));
    }
    if let Some((text, _)) = &lifetime.expires_at
        && let Ok(value) = HeaderValue::from_str(text)
    {
        out.insert(headers::STREAM_EXPIRES_AT, value);
    }
    if tail.closed {
        out.insert(headers::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
