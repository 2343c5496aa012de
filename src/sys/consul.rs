//! The local Consul agent's HTTP API, for `check --report-consul`: a TTL
//! check named `nodeprep` that carries this host's compliance into Consul's
//! catalog and UI, fleet-wide.
//!
//! The check belongs to a service of its own, also named `nodeprep`, never to
//! the node: Consul takes every service of a node whose node-level check is
//! critical out of DNS and `?passing` answers, so a failed (or silent) audit
//! would otherwise take the host's service discovery down with it. As a
//! service check it marks only `nodeprep` itself, and
//! `nodeprep.service.consul` (or `/v1/health/service/nodeprep?passing`) lists
//! the compliant hosts.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

pub const CHECK_ID: &str = "nodeprep";
/// The service the check belongs to.
pub const SERVICE_ID: &str = "nodeprep";

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

    /// Registers the `nodeprep` service with its TTL check unless both are
    /// there with this TTL (registering again would reset the check's status
    /// to critical). A node-level check of that name (nodeprep before 0.2)
    /// is deregistered first.
    pub fn ensure_check(&self, ttl_secs: u64) -> Result<bool> {
        let checks =
            crate::probes::get_json(&self.http, &format!("{}/v1/agent/checks", self.base))?;
        let notes = format!("nodeprep check --report-consul (TTL {ttl_secs}s)");
        let current = &checks[CHECK_ID];
        if current["Notes"].as_str() == Some(notes.as_str())
            && current["ServiceID"].as_str() == Some(SERVICE_ID)
        {
            return Ok(false);
        }
        if current.is_object() && current["ServiceID"].as_str().unwrap_or_default().is_empty() {
            self.put(
                &format!("/v1/agent/check/deregister/{CHECK_ID}"),
                &json!(null),
            )?;
        }
        let body = json!({
            "ID": SERVICE_ID,
            "Name": SERVICE_ID,
            "Tags": ["audit"],
            "Check": {
                "CheckID": CHECK_ID,
                "Name": "nodeprep audit",
                "TTL": format!("{ttl_secs}s"),
                "Notes": notes,
            },
        });
        self.put("/v1/agent/service/register", &body)?;
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
