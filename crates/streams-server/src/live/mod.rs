//! Live reads: long-poll and SSE. Both wait on the stream's tail channel (see
//! [`crate::stream::Stream::watch`]), so an idle reader is a parked task and costs no CPU; an
//! append wakes exactly the readers of its stream.

pub mod long_poll;
pub mod sse;
