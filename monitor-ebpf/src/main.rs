//! fimd's kernel programs.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

mod append;
mod change;
mod kernel;
mod maps;
mod vfs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
