//! Kernel sensors that report changes as they happen.
pub mod ebpf;
