//! # streams-server: a Durable Streams server
//!
//! Append-only HTTP streams with opaque, ordered offsets; catch-up reads, long-poll and SSE;
//! JSON mode, idempotent producers, closure, forks, TTLs — the whole protocol checked by the
//! upstream conformance suite — in memory or on disk, where an append is acknowledged only once
//! it is durable and concurrent appends share one `fdatasync`.
//!
//! Map: [`StreamServer`] starts a server ([`server`]). [`http`] maps methods to the store and
//! builds responses; [`live`] holds long-poll and SSE. [`store`] holds every stream by path and
//! the lifecycle (create, fork, delete, expire); [`stream`] one stream — checks, writes, reads,
//! the tail readers wait on; [`store::file`] the segment files (behind a disk seam), group commit, undoing failed writes
//! and recovery.
//! Protocol pieces: [`offset`], [`content_type`], [`json`], [`producer`], [`fork`], [`ttl`],
//! [`cursor`], [`headers`]; [`clock`] the time lifetimes are judged by. Test support: [`faults`]; embedding: [`hooks`].

pub mod clock;
pub mod content_type;
pub mod cursor;
mod error;
pub mod faults;
pub mod fork;
pub mod headers;
pub mod hooks;
pub mod http;
pub mod json;
pub mod live;
pub mod offset;
pub mod options;
pub mod producer;
pub mod server;
pub mod store;
pub mod stream;
pub mod ttl;

pub use clock::Clock;
pub use cursor::CursorOptions;
pub use error::{Error, StreamError};
pub use faults::Fault;
pub use hooks::{LifecycleEvent, LifecycleHook, LifecycleKind};
pub use offset::Offset;
pub use options::ServerOptions;
pub use server::{REGISTRY_PATH, StreamServer, StreamServerBuilder};
