//! The attributes a comparison can find different, and their names on the wire (`fim.changes`).

/// One attribute of a file that a comparison can find different (`fim.changes` of an alert).
/// [`Attribute::as_str`] is the name on the wire; `diff` lists them in the order of
/// [`Attribute::ALL`], after [`Attribute::Path`] for a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// The path: the file moved (`compare::moved`, `crate::moves`).
    Path,
    /// The file type (`Entry::kind`: regular, directory, symlink, …).
    Type,
    /// The SHA-256 of a regular file's content (`Entry::sha256`).
    Content,
    /// The length in bytes (`st_size`) of anything but a directory or symlink.
    Size,
    /// A symlink's target (`readlink`).
    LinkTarget,
    /// The permission and set-id bits (`st_mode` & 07777) of anything but a symlink.
    Mode,
    /// The owning user id (`st_uid`).
    Uid,
    /// The owning group id (`st_gid`).
    Gid,
    /// The extended attributes, names and values (ACLs and SELinux labels among them).
    Xattr,
    /// The inode flags (`FS_IOC_GETFLAGS`: immutable, append-only, …).
    Flags,
    /// The modification time (`st_mtime`, ns) of anything but a directory.
    Mtime,
    /// The inode's identity (`st_ino`, or a reused number with another birth time or generation);
    /// `Mode::Full` only.
    Inode,
    /// The hard-link count (`st_nlink`) of anything but a directory; `Mode::Full` only.
    Nlink,
    /// The status-change time (`st_ctime`, ns) of anything but a directory; `Mode::Full` only.
    Ctime,
}

impl Attribute {
    /// Every attribute, in the order `diff` lists them.
    pub const ALL: [Attribute; 14] = [
        Attribute::Path,
        Attribute::Type,
        Attribute::Content,
        Attribute::Size,
        Attribute::LinkTarget,
        Attribute::Mode,
        Attribute::Uid,
        Attribute::Gid,
        Attribute::Xattr,
        Attribute::Flags,
        Attribute::Mtime,
        Attribute::Inode,
        Attribute::Nlink,
        Attribute::Ctime,
    ];

    /// The name in `fim.changes` and in syslog structured data (`changes`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Attribute::Path => "path",
            Attribute::Type => "type",
            Attribute::Content => "content",
            Attribute::Size => "size",
            Attribute::LinkTarget => "link_target",
            Attribute::Mode => "mode",
            Attribute::Uid => "uid",
            Attribute::Gid => "gid",
            Attribute::Xattr => "xattr",
            Attribute::Flags => "flags",
            Attribute::Mtime => "mtime",
            Attribute::Inode => "inode",
            Attribute::Nlink => "nlink",
            Attribute::Ctime => "ctime",
        }
    }

    /// Whether a difference in it is one of content (`updated`), not of attributes only
    /// (`attributes_modified`).
    pub const fn is_content(self) -> bool {
        matches!(
            self,
            Attribute::Type | Attribute::Content | Attribute::Size | Attribute::LinkTarget
        )
    }
}

/// The names of `attrs`, in their order, separated by `sep` (`content,mtime`).
pub fn names(attrs: &[Attribute], sep: &str) -> String {
    let names: Vec<&str> = attrs.iter().map(|a| a.as_str()).collect();
    names.join(sep)
}

impl std::fmt::Display for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Attribute {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
