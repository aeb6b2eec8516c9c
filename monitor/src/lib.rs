//! fimd: a file integrity monitor for Linux.
pub mod alerted;
pub mod append;
pub mod attribution;
pub mod baseline;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod daemon;
pub mod evidence;
pub mod moves;
pub mod opening;
pub mod output;
pub mod problems;
pub mod scan;
pub mod sensor;
pub mod telemetry;
