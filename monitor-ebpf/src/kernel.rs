//! Typed readers of kernel memory. Member offsets come from `LAYOUT`, which the loader sets
//! from the running kernel's BTF: a raw tracepoint program reads a member as
//! `bpf_probe_read_kernel(base + offset)`, so one object serves every kernel layout.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use monitor_common::{BTRFS_SUPER_MAGIC, InodeKey, KernelLayout};

/// The running kernel's member offsets and system call numbers, set by the loader from BTF
/// (`monitor_common::KernelLayout`, symbol `KERNEL_LAYOUT_GLOBAL`).
#[unsafe(no_mangle)]
pub static LAYOUT: KernelLayout = KernelLayout::UNSET;

/// One field of `LAYOUT` (`layout!(file_f_inode)`, `layout!(regs_args[2])`), widened for
/// address arithmetic.
macro_rules! layout {
    ($($field:tt)+) => {
        crate::kernel::layout_field(&crate::kernel::LAYOUT.$($field)+)
    };
}
pub(crate) use layout;

/// Reads a field of `LAYOUT`; volatile, so the load is not folded to the placeholder the
/// loader replaces after compilation.
#[inline(always)]
pub fn layout_field(field: &u32) -> u64 {
    // SAFETY: a valid reference to a read-only global.
    u64::from(unsafe { core::ptr::read_volatile(field) })
}

/// A `T` at kernel address `addr`; a bad address is an error (the helper's), not a fault.
#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: a probe read: the helper checks the address.
    unsafe { bpf_probe_read_kernel(addr as *const T).map_err(|e| e as i64) }
}

/// The device userspace sees in `st_dev`: the superblock's, but on btrfs the subvolume's own
/// anonymous device (`BTRFS_I(inode)->root->anon_dev`), as `btrfs_getattr` reports it.
#[inline(always)]
fn device(inode: u64, sb: u64) -> Result<u32, i64> {
    if layout!(btrfs) != 0 {
        let magic: u64 = read(sb + layout!(sb_s_magic))?;
        if magic == BTRFS_SUPER_MAGIC {
            let btrfs_inode = inode - layout!(btrfs_inode_vfs_inode);
            let root: u64 = read(btrfs_inode + layout!(btrfs_inode_root))?;
            return read(root + layout!(btrfs_root_anon_dev));
        }
    }
    read(sb + layout!(sb_s_dev))
}

/// The watch-map key of `struct inode *inode`: its device as userspace sees it, and its
/// number; `None` for a null inode or one without a superblock or number.
#[inline(always)]
pub fn inode_key(inode: u64) -> Result<Option<InodeKey>, i64> {
    if inode == 0 {
        return Ok(None);
    }
    let sb: u64 = read(inode + layout!(inode_i_sb))?;
    let ino: u64 = read(inode + layout!(inode_i_ino))?;
    if sb == 0 || ino == 0 {
        return Ok(None);
    }
    let dev = device(inode, sb)?;
    Ok(Some(InodeKey { dev, _pad: 0, ino }))
}

/// Whether `inode->i_mapping->i_mmap_writable > 0`: the file has shared writable mappings.
#[inline(always)]
pub fn mmap_writable(inode: u64) -> Result<bool, i64> {
    let mapping: u64 = read(inode + layout!(inode_i_mapping))?;
    if mapping == 0 {
        return Ok(false);
    }
    Ok(read::<i32>(mapping + layout!(as_i_mmap_writable))? > 0)
}

/// `inode->i_size` (bytes), negative values as 0.
#[inline(always)]
pub fn inode_size(inode: u64) -> Result<u64, i64> {
    Ok(read::<i64>(inode + layout!(inode_i_size))?.max(0) as u64)
}

/// `file->f_inode`.
#[inline(always)]
pub fn file_inode(file: u64) -> Result<u64, i64> {
    read(file + layout!(file_f_inode))
}

/// The current task's `struct file` for descriptor `fd`: task->files->fdt->fd[fd]; `None` when
/// the task has no table or `fd` is not open (a bad descriptor is the caller's error, not a
/// failed read).
#[inline(always)]
pub fn file_of(fd: u64) -> Result<Option<u64>, i64> {
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task + layout!(task_files))?;
    if files == 0 {
        return Ok(None);
    }
    let fdt: u64 = read(files + layout!(files_fdt))?;
    let max: u32 = read(fdt + layout!(fdt_max_fds))?;
    if fd >= u64::from(max) {
        return Ok(None);
    }
    let array: u64 = read(fdt + layout!(fdt_fd))?;
    let file: u64 = read(array + fd * 8)?;
    Ok((file != 0).then_some(file))
}
