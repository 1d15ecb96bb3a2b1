//! One module per `tem` subcommand.

pub mod demo;
pub mod mock_server;
