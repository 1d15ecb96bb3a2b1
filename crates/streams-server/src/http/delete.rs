//! DELETE: remove a stream (soft, while forks still read it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::StreamError;

pub async fn delete(state: &AppState, path: &str) -> Result<Response, StreamError> {
    state.store.delete(path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
