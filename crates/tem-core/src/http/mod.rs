//! Batches of HTTP calls: JSONL input lines become tasks ([`input`]), each task becomes a
//! request from its line and a [`RequestTemplate`] ([`request`]), [`HttpHandler`] makes the call
//! and classifies the response, [`export`] writes the results back out in input order, and [`rehearse`] shows what an input would
//! send before anything is written.
//!
//! Secrets never reach the database: header values name environment variables (`${TOKEN}`)
//! that are read when the call is made.

mod call;
mod export;
mod input;
mod rehearse;
mod request;

pub use call::{ClientError, HttpHandler, HttpOptions, SecretSource};
pub use export::{ResultLine, export};
pub use input::{
    HTTP_KIND, InputSource, InputSummary, LoadError, LoadOptions, Loaded, RequestShape, load, summarize,
};
pub use rehearse::{Rehearsal, rehearse};
pub use request::{
    FullRequest, LineError, LineKind, PreparedRequest, RequestTemplate, StoredLine, expand_env, parse_line,
    parse_method,
};
