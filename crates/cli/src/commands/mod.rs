//! One module per `tem` subcommand.

pub mod demo;
