//! The baseline: recorded file states, their sealed SQLite store, and its key.
//!
//! `store` is the database's one door; below it, by what each holds: `schema` (the tables),
//! `error`, `rows` (rows as values), `sealed` (the seal over the whole baseline), `replace`
//! (`init`'s replacement of the whole baseline, sealed from the entries as inserted), `ledger`
//! (what a policy advanced since, with each append-only file's hash state) and `evidence`
//! (the MAC chain of comparisons).
pub mod entry;
mod error;
mod evidence;
pub mod files;
pub mod ledger;
mod replace;
mod rows;
mod schema;
pub mod seal;
mod sealed;
pub mod sorted;
pub mod store;
