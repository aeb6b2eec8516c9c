//! The one append judge (PCI DSS 10.5.5: appending to a log is allowed, any other change to it
//! is an alert). Pure: what was read and seen goes in, the decision comes out; the realtime
//! path (`daemon::appends`) and `check`/settling (`append::review`) both ask it, and each only
//! builds its own change from the answer.
use crate::compare::Attribute;

/// What became of the verified bytes of a log, as hashing them again found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// The verified bytes are intact (and the whole file hashed as the scan saw it).
    Intact,
    /// Shorter than the verified length.
    Shorter,
    /// The verified bytes differ.
    Changed,
    /// Not known: the file could not be read, or changed again while it was read. The next
    /// look judges it.
    Unsettled,
}

/// One look at a log whose earlier state was verified.
#[derive(Debug, Clone)]
pub struct Look<'a> {
    /// The verified length, bytes.
    pub verified_len: u64,
    /// The length now, bytes.
    pub len: u64,
    /// The attributes that differ from the verified state (`compare::diff`).
    pub differ: &'a [Attribute],
    pub content: Content,
    /// The kernel saw the file made shorter than the verified length (`VIOLATION_SHRINK`),
    /// whatever was written since.
    pub kernel_saw_shrink: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Attributes other than content, size and times changed: an alert naming them.
    AttributesModified(Vec<Attribute>),
    /// Made shorter than verified: an alert (or, under a rotation that copied the log first,
    /// a copytruncate: the caller knows).
    Truncated,
    /// Grown with the verified bytes intact: an `appended` event; the baseline advances.
    Appended {
        verified_bytes: u64,
        appended_bytes: u64,
    },
    /// The same verified content and length: nothing to report; the baseline may advance.
    Intact,
    /// The verified bytes changed: an alert.
    ContentChanged,
    /// Not decided now (see `Content::Unsettled`): reported as the change that was found.
    Unsettled,
}

/// The attributes that appending may change: content, size and the times.
const APPEND_CHANGES: [Attribute; 4] = [
    Attribute::Content,
    Attribute::Size,
    Attribute::Mtime,
    Attribute::Ctime,
];

/// The attributes of `differ` that appending does not explain.
pub fn other_attributes(differ: &[Attribute]) -> Vec<Attribute> {
    differ
        .iter()
        .copied()
        .filter(|k| !APPEND_CHANGES.contains(k))
        .collect()
}

/// Judges one look at a log (PCI DSS 10.5.5). In order: other attributes changed; made
/// shorter (as the kernel saw it, or as its length says); then what hashing found.
pub fn verdict(look: &Look<'_>) -> Verdict {
    let other = other_attributes(look.differ);
    if !other.is_empty() {
        return Verdict::AttributesModified(other);
    }
    if look.kernel_saw_shrink || look.len < look.verified_len {
        return Verdict::Truncated;
    }
    match look.content {
        Content::Intact if look.len > look.verified_len => Verdict::Appended {
            verified_bytes: look.verified_len,
            appended_bytes: look.len - look.verified_len,
        },
        Content::Intact => Verdict::Intact,
        Content::Shorter => Verdict::Truncated,
        Content::Changed => Verdict::ContentChanged,
        Content::Unsettled => Verdict::Unsettled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(verified_len: u64, len: u64, differ: &'static [Attribute], content: Content) -> Look<'static> {
        Look {
            verified_len,
            len,
            differ,
            content,
            kernel_saw_shrink: false,
        }
    }

    #[test]
    fn growth_with_intact_bytes_is_an_append() {
        assert_eq!(
            verdict(&look(
                10,
                15,
                &[
                    Attribute::Size,
                    Attribute::Content,
                    Attribute::Mtime,
                    Attribute::Ctime
                ],
                Content::Intact
            )),
            Verdict::Appended {
                verified_bytes: 10,
                appended_bytes: 5
            }
        );
        // From nothing verified: every byte appended.
        assert_eq!(
            verdict(&look(
                0,
                3,
                &[Attribute::Size, Attribute::Content],
                Content::Intact
            )),
            Verdict::Appended {
                verified_bytes: 0,
                appended_bytes: 3
            }
        );
        assert_eq!(
            verdict(&look(10, 10, &[Attribute::Mtime], Content::Intact)),
            Verdict::Intact
        );
    }

    #[test]
    fn other_attributes_win_over_content() {
        for (differ, named) in [
            (&[Attribute::Mode, Attribute::Size][..], vec![Attribute::Mode]),
            (
                &[Attribute::Uid, Attribute::Gid, Attribute::Content][..],
                vec![Attribute::Uid, Attribute::Gid],
            ),
            (&[Attribute::Inode, Attribute::Ctime][..], vec![Attribute::Inode]),
            (&[Attribute::Xattr][..], vec![Attribute::Xattr]),
        ] {
            let l = Look {
                verified_len: 10,
                len: 4,
                differ,
                content: Content::Changed,
                kernel_saw_shrink: true,
            };
            assert_eq!(verdict(&l), Verdict::AttributesModified(named), "{differ:?}");
        }
    }

    #[test]
    fn every_way_of_getting_shorter_is_a_truncation() {
        // Shorter by length, whatever hashing says.
        for content in [
            Content::Intact,
            Content::Changed,
            Content::Unsettled,
            Content::Shorter,
        ] {
            assert_eq!(
                verdict(&look(10, 9, &[Attribute::Size], content)),
                Verdict::Truncated,
                "{content:?}"
            );
        }
        // Shorter as the kernel saw it, then written back to the same or a greater length.
        for (len, content) in [
            (10, Content::Intact),
            (12, Content::Intact),
            (12, Content::Changed),
        ] {
            let mut l = look(10, len, &[Attribute::Content], content);
            l.kernel_saw_shrink = true;
            assert_eq!(verdict(&l), Verdict::Truncated, "{len} {content:?}");
        }
        assert_eq!(
            verdict(&look(10, 10, &[Attribute::Content], Content::Shorter)),
            Verdict::Truncated
        );
    }

    #[test]
    fn changed_or_unread_bytes_are_not_an_append() {
        assert_eq!(
            verdict(&look(
                10,
                15,
                &[Attribute::Content, Attribute::Size],
                Content::Changed
            )),
            Verdict::ContentChanged
        );
        assert_eq!(
            verdict(&look(10, 10, &[Attribute::Content], Content::Changed)),
            Verdict::ContentChanged
        );
        assert_eq!(
            verdict(&look(
                10,
                15,
                &[Attribute::Content, Attribute::Size],
                Content::Unsettled
            )),
            Verdict::Unsettled
        );
    }
}
