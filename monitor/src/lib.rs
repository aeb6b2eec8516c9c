//! fimd: a file integrity monitor for Linux.
pub mod alerted;
pub mod append;
pub mod attribution;
pub mod baseline;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod fstype;
pub mod moves;
pub mod output;
pub mod paths;
pub mod scan;
pub mod sensor;
pub mod telemetry;
