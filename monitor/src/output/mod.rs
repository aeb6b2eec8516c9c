//! What fimd writes: alert documents, their sinks, and file names as text.
pub mod alert;
pub mod dispatch;
pub mod jsonl;
pub mod path;
pub mod sink;
pub mod syslog;
pub mod webhook;
