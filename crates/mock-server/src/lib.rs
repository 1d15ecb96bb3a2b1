//! mock-server
