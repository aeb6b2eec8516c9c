//! Types shared by the eBPF programs and the userspace daemon.
//!
//! Everything here is `#[repr(C)]` with explicit padding: these structs cross the
//! kernel/user boundary as raw bytes, and uninitialised padding fails the verifier.
#![no_std]

/// Index of the self-test counter in `SELFTEST_HITS`.
pub const SELFTEST_SLOT: u32 = 0;

/// Name of the global the loader sets to the tgid whose system calls the self-test counts.
pub const SELFTEST_TGID_GLOBAL: &str = "SELFTEST_TGID";
