//! The crate's error type.

use crate::config::ConfigError;

/// What can go wrong starting, stopping or talking to a mock server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving failed.
    #[error("mock server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A service configuration is invalid.
    #[error("invalid service configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP client failed to reach the server.
    #[error("request to the mock server failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status.
    #[error("the mock server answered {status}: {body}")]
    Status { status: u16, body: String },
}
