//! What fimd tells its operators besides alerts: Prometheus metrics and the liveness and
//! readiness probes, served over HTTP on `metrics.listen`.
//!
//! The daemon makes one [`Metrics`] and one [`Health`] per process (they outlive reloads),
//! [`bind`]s the configured address, spawns [`serve`] with a `CancellationToken` and updates
//! both as it works.
mod connections;
mod health;
pub mod labels;
pub mod metrics;
pub mod server;

pub use metrics::Metrics;
pub use server::{BindError, Health, bind, serve};
