//! The baseline: recorded file states, their sealed SQLite store, and its key.
pub mod entry;
pub mod files;
pub mod seal;
pub mod store;
