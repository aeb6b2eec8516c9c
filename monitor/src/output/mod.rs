//! What fimd writes: alert documents, their sinks, and file names as text.
pub mod alert;
pub mod jsonl;
pub mod path;
