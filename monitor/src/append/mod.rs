//! The append-only policy (logs): growth is allowed and verified as it happens, at a cost
//! proportional to the new bytes; any other change alerts; rotation is recognised. The one
//! judge of an append is `verdict`.
pub mod content;
pub mod review;
pub mod state;
pub mod verdict;
