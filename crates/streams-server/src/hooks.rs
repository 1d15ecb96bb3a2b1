//! Lifecycle hooks: callbacks the embedding program registers to hear about creates and deletes.

use std::sync::Arc;

/// What happened to a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleKind {
    Created,
    Deleted,
}

/// One create or delete, as hooks and the registry stream see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: LifecycleKind,
    pub path: String,
    pub content_type: String,
    pub timestamp: u64,
}

/// A callback run after every create and delete (expiry included). It runs on the request's
/// task, so it should be quick; hand slow work to a channel.
pub type LifecycleHook = Arc<dyn Fn(&LifecycleEvent) + Send + Sync>;
