//! `environment`: the managed variables in /etc/environment, merged into the
//! operator's file (see `envfile`); `remove` takes them out again and puts
//! back what nodeprep replaced.

use anyhow::Result;

use crate::engine::{Action, Ensure, FileOp, Host, Keep, Plan, Resource, Want};
use crate::envfile;
use crate::render;
use crate::resources::files::{self, DirsSeen, FileSeen, FileSpec};
use crate::state::{self, Original};

pub struct Environment;

pub struct Seen {
    file: FileSeen,
    dirs: DirsSeen,
}

impl Resource for Environment {
    const ID: &'static str = "environment";
    const DEPENDS_ON: &'static [&'static str] = &[];
    type Observed = Seen;

    fn observe(host: &Host, ensure: Ensure) -> Result<Seen> {
        let path = host.cfg.environment.file.as_path();
        Ok(Seen {
            file: files::observe(host, path, ensure)?,
            dirs: match ensure {
                Ensure::Absent => files::observe_dirs(host, &[path])?,
                Ensure::Present => DirsSeen::default(),
            },
        })
    }

    fn diff(want: &Want, seen: &Seen) -> Result<Plan> {
        let names: Vec<&str> = want
            .cfg
            .environment
            .vars
            .keys()
            .map(|k| k.0.as_str())
            .collect();
        let mut plan = Plan {
            state: format!(
                "{} sets {}",
                want.cfg.environment.file.as_path().display(),
                names.join(", ")
            ),
            ..Plan::default()
        };
        let existing = seen.file.current.as_ref().map(|c| c.content.as_slice());
        match want.ensure {
            Ensure::Present => {
                let content = render::environment(want.cfg, existing.unwrap_or_default());
                plan.actions
                    .extend(files::present(&seen.file, content, FileSpec::plain(want)));
            }
            Ensure::Absent => {
                plan.actions.extend(absent(want, &seen.file));
                if seen.file.entry.is_some() {
                    plan.forget
                        .push(crate::engine::Forget::File(seen.file.path.host.clone()));
                }
                let rmdirs = files::rmdirs(want, &seen.dirs, &plan.actions);
                plan.actions.extend(rmdirs);
            }
        }
        Ok(plan)
    }
}

/// Undoing the merge. When the file is exactly what nodeprep last wrote, the
/// original comes back byte for byte (or the file goes, if nodeprep created
/// it). When others changed it since, only nodeprep's lines go, and the
/// original's lines for those keys come back: their edits stay.
fn absent(want: &Want, seen: &FileSeen) -> Option<Action> {
    let vars = render::environment_vars(want.cfg);
    let written = seen
        .entry
        .as_ref()
        .map(|e| (e.original, e.written.as_str()));
    let Some(cur) = &seen.current else {
        // Gone: put the original back if there was one.
        return match (written, &seen.original) {
            (Some((how @ Original::Kept { .. }, _)), Some(original)) => {
                Some(Action::File(FileOp::Restore {
                    path: seen.path.clone(),
                    original: original.clone(),
                    how,
                    old: None,
                    keep: Keep::Nothing,
                    secret: None,
                }))
            }
            _ => None,
        };
    };
    let untouched = written.is_some_and(|(_, w)| w == state::digest(&cur.content));
    match (written, &seen.original) {
        (Some((how @ Original::Kept { .. }, _)), Some(original)) if untouched => {
            return Some(Action::File(FileOp::Restore {
                path: seen.path.clone(),
                original: original.clone(),
                how,
                old: Some(cur.clone()),
                keep: Keep::Nothing,
                secret: None,
            }))
        }
        (Some((Original::Absent, _)), _) if untouched => {
            return Some(Action::File(FileOp::Remove {
                path: seen.path.clone(),
                old: cur.clone(),
                keep: Keep::Nothing,
                secret: None,
            }))
        }
        _ => {}
    }
    let stripped = envfile::unmerge(&cur.content, &vars, seen.original.as_deref());
    if stripped == cur.content {
        return None;
    }
    let created = matches!(written, Some((Original::Absent, _)) | None);
    if stripped.is_empty() && created {
        return Some(Action::File(FileOp::Remove {
            path: seen.path.clone(),
            old: cur.clone(),
            keep: Keep::Nothing,
            secret: None,
        }));
    }
    Some(Action::File(FileOp::Write {
        path: seen.path.clone(),
        content: stripped,
        mode: cur.mode,
        owner: want.as_root.then_some((cur.uid, cur.gid)),
        old: Some(cur.clone()),
        keep: Keep::Nothing,
        why: "nodeprep's variables taken out",
        secret: None,
    }))
}
