//! The converge loop: observe and diff every selected resource, then (for
//! `apply`) execute the plan, turning each outcome into a report line. A
//! resource that cannot be observed or converged is `failed`, never `ok`, and
//! the run goes on with the next one.

use similar::TextDiff;

use crate::plan::{Action, Plan};
use crate::report::{ResourceReport, Status};
use crate::resources::{self, Ctx, ResourceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `check`: observe and diff only; out of spec = drift.
    Check,
    /// `apply --dry-run` / `plan`: like check, worded as pending changes.
    DryRun,
    Apply,
}

pub fn run(ctx: &Ctx, ids: &[ResourceId], mode: Mode, with_diff: bool) -> Vec<ResourceReport> {
    ids.iter()
        .map(|&id| run_one(ctx, id, mode, with_diff))
        .collect()
}

fn run_one(ctx: &Ctx, id: ResourceId, mode: Mode, with_diff: bool) -> ResourceReport {
    let report = |status, detail: String, plan: Option<&Plan>| ResourceReport {
        id: id.as_str(),
        status,
        detail,
        diff: plan.filter(|_| with_diff).and_then(diffs),
    };
    let plan = match resources::plan(ctx, id) {
        Ok(plan) => plan,
        Err(e) => return report(Status::Failed, format!("{e:#}"), None),
    };
    if let Some(reason) = &plan.skipped {
        return report(Status::Skipped, reason.clone(), None);
    }
    if plan.is_empty() {
        return report(Status::Ok, with_notes(plan.state.clone(), &plan), None);
    }
    let pending: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
    match mode {
        Mode::Check => report(
            Status::Drift,
            with_notes(
                format!("{}; needs: {}", plan.state, pending.join(", ")),
                &plan,
            ),
            Some(&plan),
        ),
        Mode::DryRun => report(
            Status::Drift,
            with_notes(format!("would {}", pending.join(", ")), &plan),
            Some(&plan),
        ),
        Mode::Apply => match resources::apply(ctx, id, &plan) {
            Ok(done) => {
                ctx.mark_changed(id);
                report(
                    Status::Changed,
                    with_notes(done.join(", "), &plan),
                    Some(&plan),
                )
            }
            Err(e) => report(Status::Failed, format!("{e:#}"), Some(&plan)),
        },
    }
}

fn with_notes(mut detail: String, plan: &Plan) -> String {
    for n in &plan.notes {
        detail.push_str("; ");
        detail.push_str(n);
    }
    detail
}

/// Unified diffs of the plan's file writes, or `None` if it writes none.
fn diffs(plan: &Plan) -> Option<String> {
    let mut out = String::new();
    for action in &plan.actions {
        match action {
            Action::Write {
                path,
                content,
                old,
                secret,
                ..
            } => {
                // Secrets never reach output: not in diffs, not in logs.
                let redact = |bytes: &[u8]| {
                    let text = String::from_utf8_lossy(bytes).into_owned();
                    match secret {
                        Some(s) if !s.is_empty() => text.replace(s.as_str(), "<redacted>"),
                        _ => text,
                    }
                };
                let old = redact(old.as_deref().unwrap_or_default());
                let new = redact(content);
                let name = path.display().to_string();
                let from = if old.is_empty() {
                    "/dev/null".to_string()
                } else {
                    name.clone()
                };
                out.push_str(
                    &TextDiff::from_lines(&old, &new)
                        .unified_diff()
                        .header(&from, &name)
                        .to_string(),
                );
            }
            Action::Chmod { path, mode, old } => {
                out.push_str(&format!("mode {} {old:o} -> {mode:o}\n", path.display()));
            }
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}
