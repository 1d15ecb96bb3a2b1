//! One module per `tem` subcommand.

pub mod batch;
pub mod demo;
pub mod detect;
pub mod mock_server;
pub mod run_batch;
pub mod streams;
