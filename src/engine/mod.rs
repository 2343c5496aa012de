//! The engine: one resource contract, the whole run planned before the first
//! change, one executor.
//!
//! A resource ([`Resource`]) declares its id and what it depends on, a
//! read-only `observe` and a pure `diff(desired, observed) -> Plan`, where the
//! desired state is [`Ensure::Present`] (apply, check) or
//! [`Ensure::Absent`] (remove). The run:
//!
//! 1. plans every selected resource in order (converge order for `Present`,
//!    the reverse for `Absent`); each diff sees the plans made before it
//!    ([`Want::earlier`]), so consequences across resources are part of the
//!    plan (a changed consul config shows as a consul restart in `plan`);
//! 2. `check` and dry runs stop there; `apply` and `remove` execute each
//!    resource's actions in order through [`execute`]: a failed action fails
//!    its resource, and the run goes on with the next one;
//! 3. every resource becomes one [`ResourceReport`], which lists the actions
//!    planned (check, dry run) or done (apply, remove): the same text, so a
//!    plan can be compared with the apply that follows it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use similar::TextDiff;

use crate::config::Config;
use crate::report::{ResourceReport, Status};
use crate::state::Trust;

pub mod action;
pub mod execute;
pub mod host;

pub use action::{
    Action, ContainerOp, Current, FileOp, HostPath, Keep, LinkOp, NmOp, ResolverOp, UnitOp,
};
pub use host::{Backend, BackendChoice, Host};

/// The desired state of every resource of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensure {
    /// Set up: `apply`, `check`, `plan`.
    Present,
    /// Undone: `remove`.
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `check`: observe and diff only; out of spec = drift.
    Check,
    /// `apply --dry-run`, `plan`, `remove --dry-run`: like check, worded as
    /// pending changes.
    DryRun,
    /// `apply`, `remove`: execute the plan.
    Apply,
}

/// The contract every resource implements. `observe` reads the host and
/// changes nothing; `diff` is pure. Neither executes anything: the plan's
/// actions are run by the engine.
pub trait Resource {
    /// The id reports, `--only` and `--skip` use.
    const ID: &'static str;
    /// Resources that must converge before this one (and be removed after
    /// it), and whose planned changes this one's diff may react to.
    const DEPENDS_ON: &'static [&'static str];
    type Observed;
    /// Reads what the diff for `ensure` needs.
    fn observe(host: &Host, ensure: Ensure) -> anyhow::Result<Self::Observed>;
    fn diff(want: &Want, observed: &Self::Observed) -> anyhow::Result<Plan>;
}

/// One row of the resource table: a resource with its type erased.
pub struct Entry {
    pub id: &'static str,
    pub depends_on: &'static [&'static str],
    plan: fn(&Host, &Want) -> anyhow::Result<Plan>,
}

impl Entry {
    pub const fn of<R: Resource>() -> Entry {
        Entry {
            id: R::ID,
            depends_on: R::DEPENDS_ON,
            plan: plan_of::<R>,
        }
    }

    pub fn plan(&self, host: &Host, want: &Want) -> anyhow::Result<Plan> {
        (self.plan)(host, want)
    }
}

fn plan_of<R: Resource>(host: &Host, want: &Want) -> anyhow::Result<Plan> {
    let observed = R::observe(host, want.ensure)?;
    R::diff(want, &observed)
}

/// What the diff is asked to reach, and the context it may consider.
pub struct Want<'a> {
    pub ensure: Ensure,
    pub cfg: &'a Config,
    /// Files must be root-owned (nodeprep runs as root).
    pub as_root: bool,
    /// `remove --purge-data`.
    pub purge_data: bool,
    /// How far nodeprep's record can be trusted.
    pub trust: &'a Trust,
    /// The plans made before this one in this run, in run order.
    pub earlier: &'a [Planned],
}

impl Want<'_> {
    /// Whether an earlier resource of this run plans changes.
    pub fn changes(&self, id: &str) -> bool {
        self.earlier
            .iter()
            .any(|p| p.id == id && p.plan.as_ref().is_ok_and(|p| !p.actions.is_empty()))
    }

    /// Host paths that earlier plans of this run delete.
    pub fn deleted_paths(&self) -> BTreeSet<PathBuf> {
        self.earlier
            .iter()
            .filter_map(|p| p.plan.as_ref().ok())
            .flat_map(|p| &p.actions)
            .filter(|a| a.deletes_path())
            .filter_map(|a| a.file_path().map(|p| p.host.clone()))
            .collect()
    }
}

/// What a resource needs done, what it looks like now (for the report), and
/// remarks for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The resource's state in a few words, e.g. "dummy0 169.254.1.1/32 up".
    pub state: String,
    pub notes: Vec<String>,
    /// Set when the resource is not managed in this run, with the reason.
    pub skipped: Option<String>,
    /// Record entries that no longer describe anything once this plan is
    /// carried out (a removed file's entry, a link that is gone).
    pub forget: Vec<Forget>,
    /// Out of spec in a way this run may not fix (a dockerd restart that
    /// would stop others' containers): drift for `check`, a note otherwise.
    pub pending: Vec<String>,
}

/// A record entry a successful remove lets go of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    File(PathBuf),
    Link(String),
    Unit(String),
}

impl Plan {
    pub fn skipped(reason: impl Into<String>) -> Plan {
        Plan {
            skipped: Some(reason.into()),
            ..Plan::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// True when the plan changes at least one file.
    pub fn changes_files(&self) -> bool {
        self.actions.iter().any(Action::changes_file)
    }
}

/// A resource's plan, or why it could not be made.
pub struct Planned {
    pub id: &'static str,
    pub plan: Result<Plan, String>,
}

/// How one run goes.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    pub mode: Mode,
    pub ensure: Ensure,
    pub with_diff: bool,
    pub purge_data: bool,
}

/// What a run found and did, resource by resource, in run order, with the
/// run's own remarks (the state record's).
pub struct Outcome {
    pub resources: Vec<ResourceReport>,
    pub notes: Vec<String>,
}

/// Plans the selected resources (given in table order), then executes the
/// plan when `spec.mode` is `Apply`.
pub fn run(host: &Host, selected: &[&Entry], spec: RunSpec) -> Outcome {
    let mut order: Vec<&Entry> = selected.to_vec();
    if spec.ensure == Ensure::Absent {
        order.reverse();
    }
    let planned = plan_all(host, &order, spec);
    let mut notes: Vec<String> = host.store.describe_trust().into_iter().collect();
    if spec.mode != Mode::Apply {
        let resources = planned.iter().map(|p| report_planned(p, spec)).collect();
        return Outcome { resources, notes };
    }
    let mut store = host.store.clone();
    // Under the lock, before the first change: temporary files a killed
    // run left beside the managed files go.
    if crate::interrupt::requested().is_none() {
        notes.extend(execute::sweep(host, &store));
    }
    // The read-only part of the run ends here: from now on each file
    // operation resolves its directory again (see `rooted::reuse_dirs`).
    crate::sys::rooted::forget_dirs();
    let mut resources = Vec::with_capacity(planned.len());
    for p in &planned {
        resources.push(execute_planned(host, &mut store, p, spec));
    }
    if spec.ensure == Ensure::Absent {
        notes.extend(execute::tidy_state(host, &mut store));
    }
    Outcome { resources, notes }
}

/// The whole run's plan, made before anything changes.
pub fn plan_all(host: &Host, order: &[&Entry], spec: RunSpec) -> Vec<Planned> {
    let mut planned: Vec<Planned> = Vec::with_capacity(order.len());
    for entry in order {
        let want = Want {
            ensure: spec.ensure,
            cfg: &host.cfg,
            as_root: host.as_root,
            purge_data: spec.purge_data,
            trust: &host.store.trust,
            earlier: &planned,
        };
        let plan = entry.plan(host, &want).map_err(|e| format!("{e:#}"));
        planned.push(Planned { id: entry.id, plan });
    }
    planned
}

fn report(id: &'static str, status: Status, detail: String) -> ResourceReport {
    ResourceReport {
        id,
        status,
        detail,
        actions: Vec::new(),
        diff: None,
    }
}

fn report_planned(p: &Planned, spec: RunSpec) -> ResourceReport {
    let plan = match &p.plan {
        Ok(plan) => plan,
        Err(e) => return report(p.id, Status::Failed, e.clone()),
    };
    if let Some(reason) = &plan.skipped {
        return report(
            p.id,
            Status::Skipped,
            with_notes(reason.clone(), &plan.notes),
        );
    }
    let notes: Vec<String> = plan.notes.iter().chain(&plan.pending).cloned().collect();
    if plan.is_empty() {
        let status = if spec.mode == Mode::Check && !plan.pending.is_empty() {
            Status::Drift
        } else {
            Status::Ok
        };
        return report(p.id, status, with_notes(plan.state.clone(), &notes));
    }
    let pending: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
    let detail = match spec.mode {
        Mode::Check => format!("{}; needs: {}", plan.state, pending.join(", ")),
        _ => format!("would {}", pending.join(", ")),
    };
    ResourceReport {
        id: p.id,
        status: Status::Drift,
        detail: with_notes(detail, &notes),
        diff: spec.with_diff.then(|| diffs(plan)).flatten(),
        actions: pending,
    }
}

fn execute_planned(
    host: &Host,
    store: &mut crate::state::Store,
    p: &Planned,
    spec: RunSpec,
) -> ResourceReport {
    let plan = match &p.plan {
        Ok(plan) if plan.skipped.is_none() && !plan.is_empty() => plan,
        _ => {
            let mut r = report_planned(p, spec);
            if r.status == Status::Ok && spec.ensure == Ensure::Absent {
                if let Ok(plan) = &p.plan {
                    execute::forget(host, store, &plan.forget);
                }
            }
            r.diff = None;
            return r;
        }
    };
    let mut done = Vec::new();
    let mut notes: Vec<String> = plan.notes.iter().chain(&plan.pending).cloned().collect();
    for (i, action) in plan.actions.iter().enumerate() {
        if let Some(sig) = crate::interrupt::requested() {
            // Stop between two actions: the one before was finished, the
            // next is not started.
            let left: Vec<String> = plan.actions[i..].iter().map(|a| a.to_string()).collect();
            let mut detail = format!("interrupted by {sig}; not done: {}", left.join(", "));
            if !done.is_empty() {
                detail.push_str(&format!("; done: {}", done.join(", ")));
            }
            return ResourceReport {
                id: p.id,
                status: Status::Failed,
                detail,
                diff: spec.with_diff.then(|| diffs(plan)).flatten(),
                actions: done,
            };
        }
        match execute::action(host, store, action) {
            Ok(note) => {
                done.push(action.to_string());
                notes.extend(note);
            }
            Err(e) => {
                let e = if done.is_empty() {
                    e
                } else {
                    e.context(format!("after {}", done.join(", ")))
                };
                return ResourceReport {
                    id: p.id,
                    status: Status::Failed,
                    detail: format!("{e:#}"),
                    diff: spec.with_diff.then(|| diffs(plan)).flatten(),
                    actions: done,
                };
            }
        }
    }
    if spec.ensure == Ensure::Absent {
        execute::forget(host, store, &plan.forget);
    }
    ResourceReport {
        id: p.id,
        status: Status::Changed,
        detail: with_notes(done.join(", "), &notes),
        diff: spec.with_diff.then(|| diffs(plan)).flatten(),
        actions: done,
    }
}

fn with_notes(mut detail: String, notes: &[String]) -> String {
    for n in notes {
        detail.push_str("; ");
        detail.push_str(n);
    }
    detail
}

/// Unified diffs of the plan's file changes, or `None` if it changes none.
/// Secrets never reach output: not in diffs, not in logs.
fn diffs(plan: &Plan) -> Option<String> {
    let mut out = String::new();
    let mut modes = String::new();
    let redact = |bytes: &[u8], secret: &Option<String>| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        match secret {
            Some(s) if !s.is_empty() => text.replace(s.as_str(), "<redacted>"),
            _ => text,
        }
    };
    let mut unified = |path: &HostPath, old: Option<&[u8]>, new: Option<&[u8]>, secret| {
        let name = path.to_string();
        let from = if old.is_none() { "/dev/null" } else { &name };
        let to = if new.is_none() { "/dev/null" } else { &name };
        let old = redact(old.unwrap_or_default(), secret);
        let new = redact(new.unwrap_or_default(), secret);
        out.push_str(
            &TextDiff::from_lines(&old, &new)
                .unified_diff()
                .header(from, to)
                .to_string(),
        );
    };
    for action in &plan.actions {
        match action {
            Action::File(FileOp::Write {
                path,
                content,
                old,
                secret,
                ..
            }) => unified(
                path,
                old.as_ref().map(|o| o.content.as_slice()),
                Some(content),
                secret,
            ),
            Action::File(FileOp::Remove {
                path, old, secret, ..
            }) => unified(path, Some(&old.content), None, secret),
            Action::File(FileOp::Restore {
                path,
                original,
                old,
                secret,
                ..
            }) => unified(
                path,
                old.as_ref().map(|o| o.content.as_slice()),
                Some(original),
                secret,
            ),
            Action::File(FileOp::Chmod { path, mode, old }) => {
                modes.push_str(&format!("mode {path} {old:o} -> {mode:o}\n"));
            }
            _ => {}
        }
    }
    out.push_str(&modes);
    (!out.is_empty()).then_some(out)
}
