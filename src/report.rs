//! What a run found and did, per resource: the data behind every output format.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In spec; nothing to do.
    Ok,
    /// `apply` changed it.
    Changed,
    /// Out of spec: found by `check`, or pending under `apply --dry-run`.
    Drift,
    /// nodeprep could not observe or converge it.
    Failed,
    /// Not managed in this run (offline `--root` mode, or not applicable).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Drift => "drift",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    /// The actions planned (check, dry runs) or carried out (apply, remove),
    /// in order: the same text for a plan and the apply that follows it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Unified diffs of the file changes, with `--diff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub changed: usize,
    pub drift: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub version: &'static str,
    pub host: String,
    /// When the run started, RFC 3339 UTC.
    pub timestamp: String,
    /// Unix time of the start, for the Prometheus format.
    #[serde(skip)]
    pub unix_time: f64,
    pub duration_seconds: f64,
    /// Counts over resources and probes together.
    pub summary: Summary,
    pub resources: Vec<ResourceReport>,
    pub probes: Vec<ResourceReport>,
    /// Remarks about the run itself (nodeprep's state record).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// With `--report-consul`: what was sent to the agent, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consul_report: Option<ConsulReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsulReport {
    /// The check status sent (passing, warning, critical), or "failed".
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<anyhow::Result<&'static str>> for ConsulReport {
    fn from(r: anyhow::Result<&'static str>) -> Self {
        match r {
            Ok(status) => ConsulReport {
                status,
                error: None,
            },
            Err(e) => ConsulReport {
                status: "failed",
                error: Some(format!("{e:#}")),
            },
        }
    }
}

impl Report {
    pub fn new(
        command: &'static str,
        started: std::time::SystemTime,
        resources: Vec<ResourceReport>,
        probes: Vec<ResourceReport>,
    ) -> Report {
        let mut summary = Summary::default();
        for r in resources.iter().chain(&probes) {
            *match r.status {
                Status::Ok => &mut summary.ok,
                Status::Changed => &mut summary.changed,
                Status::Drift => &mut summary.drift,
                Status::Failed => &mut summary.failed,
                Status::Skipped => &mut summary.skipped,
            } += 1;
        }
        let since_epoch = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Report {
            command,
            version: env!("CARGO_PKG_VERSION"),
            host: sysinfo::System::host_name().unwrap_or_default(),
            timestamp: humantime::format_rfc3339_seconds(started).to_string(),
            unix_time: since_epoch.as_secs_f64(),
            duration_seconds: started.elapsed().unwrap_or_default().as_secs_f64(),
            summary,
            resources,
            probes,
            notes: Vec::new(),
            consul_report: None,
        }
    }

    /// The one-line summary people and Consul's check output read.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        format!(
            "{}: {} ok, {} changed, {} drift, {} failed, {} skipped",
            self.command, s.ok, s.changed, s.drift, s.failed, s.skipped
        )
    }
}
