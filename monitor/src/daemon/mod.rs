//! `fimd run`: the realtime daemon. The sensor reports each change of a watched inode with the
//! task that made it; the daemon re-arms the inode, rehashes what changed, compares it with the
//! baseline and alerts. See docs/sensor-design.md for the protocol.
//!
//! Cut by the state each part owns, driven by one loop (`serve`) that passes each part what it
//! needs; imports run from the loop down to the parts, never back:
//! - `watch_index`: the last state seen of each path, the paths of each inode, the watch roots,
//!   and the sensor armed for them; `seen_paths`: the seen paths with each directory's names,
//!   so a rescan reaches a directory's children or subtree without walking every path;
//! - `appends`: what is verified of each append-only log (states, checkpoints, retired logs,
//!   logs to read whole); the decision is `append::verdict`;
//! - `settle`: rotating directories waiting for quiet, and paths gone waiting for a move;
//! - `recheck`: later looks at memory-mapped and just-truncated files;
//! - `alerts`: the outbox, the origin, the sinks, the alerted differences and the metrics;
//! - `signals`: one `Control` per signal;
//! - `state` holds the parts and the steps that need several; `handle` reacts to records;
//!   `rescan` holds a rescan's pure decisions; `pace` paces a busy directory's listings by
//!   their cost; `follow` takes over a resealed baseline;
//! - `blocking`: calls that can block on a file or mount (the write barrier, rehashes of large
//!   files), run off the loop with deadlines; `stop` ends the process if a SIGTERM is not
//!   obeyed in time.
mod alerts;
mod appends;
mod blocking;
mod follow;
mod full_check;
mod handle;
mod look;
mod modifier;
mod pace;
mod recheck;
mod rescan;
mod rules;
mod seen_paths;
mod serve;
mod settle;
mod signals;
mod state;
mod state_writes;
mod stop;
mod watch_index;
mod watch_roots;

pub use serve::run;
