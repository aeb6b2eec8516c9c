//! Kernel sensors that report changes as they happen.
pub mod btf;
pub mod ebpf;
