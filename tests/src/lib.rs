//! Support for the end-to-end tests in this directory: a recorder server that sees every call a
//! worker makes, and process helpers. The tests themselves are the `*.rs` files beside `src/`.

pub mod recorder;
