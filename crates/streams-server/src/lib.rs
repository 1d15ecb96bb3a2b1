//! streams-server
