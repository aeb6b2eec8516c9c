//! What fimd writes: alert documents, their sinks, and file names as text.
pub mod alert;
pub mod dispatch;
mod doc;
pub(crate) mod ecs;
pub mod jsonl;
pub mod path;
mod queue;
pub mod sink;
pub mod syslog;
pub mod typed;
pub mod webhook;
