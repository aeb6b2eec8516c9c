//! `[metrics]`: where `/metrics`, `/healthz` and `/readyz` listen.
use serde::Deserialize;
use toml::Spanned;

use super::values::{TableError, invalid};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// `/metrics`, `/healthz` and `/readyz` on this address (none when absent).
    listen: Option<Spanned<String>>,
}

impl RawMetrics {
    /// The address as written, checked to be `address:port`; `None`: no endpoint.
    pub(super) fn validate(&self) -> Result<Option<String>, TableError> {
        Ok(match &self.listen {
            None => None,
            Some(a) => {
                a.get_ref().parse::<std::net::SocketAddr>().map_err(|e| {
                    invalid(
                        a.span(),
                        format!(
                            "metrics.listen: {:?}: {e}; give an address and port such as \"127.0.0.1:9464\"",
                            a.get_ref()
                        ),
                    )
                })?;
                Some(a.get_ref().clone())
            }
        })
    }
}
