//! Errors: what a request can be refused for ([`StreamError`], each with its status), and what
//! can stop the server or its store ([`Error`]).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::headers;
use crate::offset::Offset;

/// Why a request was refused; each variant is one status code of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// 404: no such stream (or it expired).
    #[error("stream not found")]
    NotFound,
    /// 410: the stream was deleted but forks still read its data.
    #[error("stream was deleted")]
    Gone,
    /// 400: a header, parameter or body is malformed.
    #[error("{field}: {message}")]
    BadRequest { field: &'static str, message: String },
    /// 409: the stream is closed; `tail` is its final offset.
    #[error("stream is closed")]
    Closed { tail: Offset },
    /// 409: the request conflicts with the stream's state or configuration.
    #[error("{field}: {message}")]
    Conflict { field: &'static str, message: String },
    /// 403: the producer's epoch is older than the one the stream knows.
    #[error("producer epoch {received} is stale; the current epoch is {current}")]
    StaleEpoch { current: u64, received: u64 },
    /// 409: the producer skipped sequence numbers.
    #[error("producer sequence gap: expected {expected}, received {received}")]
    SequenceGap { expected: u64, received: u64 },
    /// 413: the body is over the server's limit.
    #[error("the body is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// 500: the store failed; the request had no effect that will be acknowledged.
    #[error("storage failure: {0}")]
    Storage(String),
    /// 507: the disk under the data directory is full; nothing of the request was stored.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
}

impl StreamError {
    /// A 400 naming the header, parameter or body at fault.
    pub fn bad_request(field: &'static str, message: impl Into<String>) -> Self {
        StreamError::BadRequest {
            field,
            message: message.into(),
        }
    }

    /// A 409 naming what conflicts.
    pub fn conflict(field: &'static str, message: impl Into<String>) -> Self {
        StreamError::Conflict {
            field,
            message: message.into(),
        }
    }

    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            StreamError::NotFound => StatusCode::NOT_FOUND,
            StreamError::Gone => StatusCode::GONE,
            StreamError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            StreamError::Closed { .. } | StreamError::Conflict { .. } | StreamError::SequenceGap { .. } => {
                StatusCode::CONFLICT
            }
            StreamError::StaleEpoch { .. } => StatusCode::FORBIDDEN,
            StreamError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StreamError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            StreamError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            StreamError::BadRequest { field, .. } | StreamError::Conflict { field, .. } => Some(field),
            StreamError::StaleEpoch { .. } => Some(headers::PRODUCER_EPOCH),
            StreamError::SequenceGap { .. } => Some(headers::PRODUCER_SEQ),
            StreamError::Closed { .. } => Some(headers::STREAM_CLOSED),
            StreamError::TooLarge { .. } => Some("body"),
            _ => None,
        }
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Some(field) = self.field() {
            body["field"] = field.into();
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        let number = |n: u64| HeaderValue::from(n);
        match self {
            StreamError::Closed { tail } => {
                headers.insert(headers::STREAM_CLOSED, HeaderValue::from_static("true"));
                headers.insert(headers::STREAM_NEXT_OFFSET, headers::offset_value(tail));
            }
            StreamError::StaleEpoch { current, .. } => {
                headers.insert(headers::PRODUCER_EPOCH, number(current));
            }
            StreamError::SequenceGap { expected, received } => {
                headers.insert(headers::PRODUCER_EXPECTED_SEQ, number(expected));
                headers.insert(headers::PRODUCER_RECEIVED_SEQ, number(received));
            }
            _ => {}
        }
        response
    }
}

impl Error {
    /// Whether the disk under the store is full (the metadata database's `SQLITE_FULL`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io(error) => matches!(
                error.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            Error::Metadata(sqlx::Error::Database(database)) => database.code().as_deref() == Some("13"),
            _ => false,
        }
    }
}

/// What can stop the server or its store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding, serving or file I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The metadata database failed.
    #[error("metadata store error: {0}")]
    Metadata(#[from] sqlx::Error),
    /// The metadata database could not be migrated.
    #[error("metadata store migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Recovery had to change the store and could not.
    #[error("recovering the store: {0}")]
    Recovery(#[from] StreamError),
    /// Another process serves the data directory (it holds the directory's lock).
    #[error("data directory {path} is in use by another server ({})", match pid {
        Some(pid) => format!("pid {pid}"),
        None => "its pid is not known yet".to_owned(),
    })]
    Locked { path: String, pid: Option<u32> },
    /// The data directory holds something this server cannot read.
    #[error("data directory {path}: {message}")]
    DataDir { path: String, message: String },
}
