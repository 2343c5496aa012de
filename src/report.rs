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
    pub summary: Summary,
    pub resources: Vec<ResourceReport>,
}

impl Report {
    pub fn new(command: &'static str, resources: Vec<ResourceReport>) -> Report {
        let mut summary = Summary::default();
        for r in &resources {
            *match r.status {
                Status::Ok => &mut summary.ok,
                Status::Changed => &mut summary.changed,
                Status::Drift => &mut summary.drift,
                Status::Failed => &mut summary.failed,
                Status::Skipped => &mut summary.skipped,
            } += 1;
        }
        Report {
            command,
            version: env!("CARGO_PKG_VERSION"),
            summary,
            resources,
        }
    }
}
