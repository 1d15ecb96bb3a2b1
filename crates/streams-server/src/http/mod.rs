//! The HTTP surface: one handler per method over the stream at the request's path. Every
//! response passes through [`dispatch`]: CORS preflights, injected faults, and the headers every
//! response carries, without a middleware layer per concern on the hot path.

mod append;
mod create;
mod delete;
mod gzip;
mod head;
pub(crate) mod read;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use crate::error::StreamError;
use crate::faults::Faults;
use crate::options::ServerOptions;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub options: Arc<ServerOptions>,
    /// Cancelled at shutdown: live reads answer at once instead of holding the server open.
    pub shutdown: CancellationToken,
    /// Faults armed for client tests (see [`crate::faults`]).
    pub faults: Faults,
}

/// The streams router (every path is a stream path).
pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<AppState>, RawQuery(query): RawQuery, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut response = if parts.method == Method::OPTIONS {
        // A CORS preflight, for any path (the stream need not exist yet).
        StatusCode::NO_CONTENT.into_response()
    } else {
        let serve = async {
            handle(
                &state,
                &parts.method,
                &parts.uri,
                &parts.headers,
                query.as_deref(),
                body,
            )
            .await
            .unwrap_or_else(IntoResponse::into_response)
        };
        match state.faults.take(parts.uri.path(), parts.method.as_str()) {
            Some(fault) => crate::faults::around(fault, serve).await,
            None => serve.await,
        }
    };
    crate::headers::stamp(response.headers_mut());
    response
}

async fn handle(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Result<Response, StreamError> {
    let path = stream_path(uri.path())?;
    match *method {
        Method::GET => read::get(state, path, headers, &Query::parse(query)).await,
        Method::HEAD => head::head(state, path).await,
        Method::PUT => create::put(state, path, uri, headers, read_body(state, body).await?).await,
        Method::POST => append::post(state, path, headers, read_body(state, body).await?).await,
        Method::DELETE => delete::delete(state, path).await,
        _ => Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            [("allow", "GET, HEAD, PUT, POST, DELETE, OPTIONS")],
        )
            .into_response()),
    }
}

/// Checks a stream path: absolute, no empty or dot segments, no control characters.
fn stream_path(path: &str) -> Result<&str, StreamError> {
    let bad = |why: &str| StreamError::bad_request("path", format!("invalid stream path: {why}"));
    if path.len() <= 1 {
        return Err(bad("name a stream, e.g. /v1/stream/events"));
    }
    if path.len() > 4096 {
        return Err(bad("longer than 4096 bytes"));
    }
    // Checked on every request, so without allocating: `%00` needs no case folding, and a dot
    // segment is one or two dots, each `.` or `%2e` in either case.
    if path.contains("%00") || path.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("control characters are not allowed"));
    }
    let dot_segment = |segment: &str| {
        let mut rest = segment.as_bytes();
        let mut dots = 0;
        while !rest.is_empty() {
            rest = match rest {
                [b'.', tail @ ..] => tail,
                [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
                _ => return false,
            };
            dots += 1;
        }
        dots == 1 || dots == 2
    };
    if path.ends_with('/') || path.contains("//") {
        return Err(bad(
            "empty name: name the stream after the last '/', e.g. /v1/stream/events",
        ));
    }
    if path.split('/').skip(1).any(dot_segment) {
        return Err(bad("'.' and '..' segments are not allowed"));
    }
    Ok(path)
}

async fn read_body(state: &AppState, body: Body) -> Result<Vec<u8>, StreamError> {
    let limit = state.options.max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|_| StreamError::TooLarge { limit })
}

/// The query parameters the protocol reads; others are ignored.
#[derive(Debug, Default)]
pub struct Query {
    pub offsets: Vec<String>,
    pub live: Option<String>,
    pub cursor: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut query = Query::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "offset" => query.offsets.push(value.into_owned()),
                "live" => query.live = Some(value.into_owned()),
                "cursor" => query.cursor = Some(value.into_owned()),
                _ => {}
            }
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_paths() {
        assert!(stream_path("/v1/stream/a-b_c.d").is_ok());
        assert!(
            stream_path("/v1/stream/.../a%2e").is_ok(),
            "three dots are a name"
        );
        for bad in [
            "/",
            "",
            "/v1/../x",
            "/v1/%2E%2E/x",
            "/a/%2e./b",
            "/a/./b",
            "/a%00b",
            "/a/..",
            "/v1/stream/",
            "/v1//stream/x",
        ] {
            assert!(stream_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queries_are_percent_decoded_and_repeats_kept() {
        let query = Query::parse(Some("offset=0%201&offset=-1&foo=bar&live=sse"));
        assert_eq!(query.offsets, ["0 1", "-1"]);
        assert_eq!(query.live.as_deref(), Some("sse"));
    }
}
