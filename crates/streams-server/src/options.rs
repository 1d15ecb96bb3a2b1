//! Server settings that shape the protocol's behaviour.

use std::time::Duration;

use crate::cursor::CursorOptions;

/// How long-poll, SSE, reads and bodies behave.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How long a long-poll waits at the tail before answering 204 (and how often an idle SSE
    /// connection gets a control event).
    pub long_poll_timeout: Duration,
    /// SSE connections are ended after about this long, so proxies and clients reconnect
    /// (and load spreads) rather than pinning a connection forever.
    pub sse_lifetime: Duration,
    /// The most bytes a catch-up read returns at once (whole messages for JSON and text).
    pub max_read_bytes: usize,
    /// Request bodies above this answer 413.
    pub max_body_bytes: usize,
    /// Long-poll cursor clock.
    pub cursor: CursorOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            long_poll_timeout: Duration::from_secs(30),
            sse_lifetime: Duration::from_secs(60),
            max_read_bytes: 1 << 20,
            max_body_bytes: 64 << 20,
            cursor: CursorOptions::default(),
        }
    }
}
