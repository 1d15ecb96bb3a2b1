//! Batches of HTTP calls: JSONL input lines become tasks ([`input`]), each task becomes a
//! request from its line and a [`RequestTemplate`] ([`request`]), [`HttpHandler`] makes the call
//! and classifies the response, and [`export`] writes the results back out in input order.
//!
//! Secrets never reach the database: header values name environment variables (`${TOKEN}`)
//! that are read when the call is made.

mod call;
mod export;
mod input;
mod request;

pub use call::{ClientError, HttpHandler, HttpOptions, SecretSource};
pub use export::{ResultLine, export};
pub use input::{
    HTTP_KIND, InputSource, InputSummary, LoadError, LoadOptions, Loaded, RequestShape, load, summarize,
};
pub use request::{
    FullRequest, LineError, LineKind, PreparedRequest, RequestTemplate, StoredLine, expand_env, parse_line,
    parse_method,
};
