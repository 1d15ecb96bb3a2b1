//! End-to-end tests of the `tem` binary and the servers live in `tests/*.rs`.
