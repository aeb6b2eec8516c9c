//! File names as text: kept here for the callers that name it `output::path`; the one home is
//! [`crate::paths`], below every module that prints a path.
pub use crate::paths::{path_text, unescape};
