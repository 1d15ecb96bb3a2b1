//! Support for the end-to-end tests in this directory: the real `tem` binary, a recorder server
//! that sees every call a worker makes, an echo API for `tem run-batch`, a fresh Postgres database per test, and process helpers. The tests themselves are the `*.rs` files beside `src/`.

pub mod binary;
pub mod echo;
pub mod pacing;
pub mod postgres;
pub mod recorder;
