//! Support for the end-to-end tests in this directory: the real `tem` binary, a recorder server
//! that sees every call a worker makes, an echo API for `tem run-batch`, and process helpers. The tests themselves are the `*.rs` files beside `src/`.

pub mod binary;
pub mod cli;
pub mod echo;
pub mod pacing;
pub mod recorder;

/// Postgres for tests, shared with tem-core's tests and `cargo xtask test`.
pub use tem_test_support::{pg_cluster, postgres};
