//! The local Consul agent's HTTP API, for `check --report-consul`: a TTL
//! check named `nodeprep` that carries this host's compliance into Consul's
//! catalog and UI, fleet-wide.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

pub const CHECK_ID: &str = "nodeprep";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }
}

pub struct Agent {
    base: String,
    http: ureq::Agent,
}

impl Agent {
    pub fn new(base: String, timeout: Duration) -> Agent {
        Agent {
            base,
            http: crate::probes::http(timeout),
        }
    }

    /// Registers the TTL check unless it is already there with this TTL
    /// (registering again would reset its status to critical).
    pub fn ensure_check(&self, ttl_secs: u64) -> Result<bool> {
        let checks =
            crate::probes::get_json(&self.http, &format!("{}/v1/agent/checks", self.base))?;
        let notes = format!("nodeprep check --report-consul (TTL {ttl_secs}s)");
        if checks[CHECK_ID]["Notes"].as_str() == Some(notes.as_str()) {
            return Ok(false);
        }
        let body = json!({
            "ID": CHECK_ID,
            "Name": CHECK_ID,
            "TTL": format!("{ttl_secs}s"),
            "Notes": notes,
        });
        self.put("/v1/agent/check/register", &body)?;
        Ok(true)
    }

    pub fn update(&self, status: CheckStatus, output: &str) -> Result<()> {
        let body = json!({ "Status": status.as_str(), "Output": output });
        self.put(&format!("/v1/agent/check/update/{CHECK_ID}"), &body)
    }

    fn put(&self, path: &str, body: &serde_json::Value) -> Result<()> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .http
            .put(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("PUT {url}: HTTP {status}: {}", text.trim());
        }
        Ok(())
    }
}
