//! Planned side effects. A resource's `plan` observes the host read-only and
//! diffs it against the configuration into a list of actions; `check` stops
//! there, `apply` executes them.

use std::fmt;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::sys::docker::ContainerSpec;
use crate::sys::files::Observed;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replace (or create) a file atomically.
    Write {
        path: PathBuf,
        content: Vec<u8>,
        mode: u32,
        /// The current content, for diffs; `None` when the file is absent.
        old: Option<Vec<u8>>,
        why: &'static str,
        /// Owner to set (live mode, as root).
        owner: Option<(u32, u32)>,
        /// A secret the content holds: redacted from every diff.
        secret: Option<String>,
    },
    /// Create a directory, or fix its mode and owner.
    Dir {
        path: PathBuf,
        mode: u32,
        owner: Option<(u32, u32)>,
        why: String,
    },
    /// Only the permission bits differ.
    Chmod {
        path: PathBuf,
        mode: u32,
        old: u32,
    },
    CreateLink {
        name: String,
    },
    AddAddress {
        name: String,
        net: Ipv4Net,
    },
    SetUp {
        name: String,
    },
    EnableUnit {
        unit: &'static str,
    },
    /// Keep a unit disabled (one that enabling another pulled in).
    DisableUnit {
        unit: &'static str,
    },
    ReloadNetworkd,
    RestartUnit {
        unit: &'static str,
    },
    PullImage {
        image: String,
    },
    /// Remove a container (force: stops it first).
    RemoveContainer {
        name: String,
        why: &'static str,
    },
    CreateContainer {
        name: String,
        spec: Box<ContainerSpec>,
    },
    StartContainer {
        name: String,
    },
    RestartContainer {
        name: String,
        why: &'static str,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Write { path, why, .. } => write!(f, "write {} ({why})", path.display()),
            Action::Chmod { path, mode, old } => {
                write!(f, "chmod {mode:o} {} (was {old:o})", path.display())
            }
            Action::CreateLink { name } => write!(f, "create dummy link {name}"),
            Action::AddAddress { name, net } => write!(f, "add {net} to {name}"),
            Action::SetUp { name } => write!(f, "set {name} up"),
            Action::EnableUnit { unit } => write!(f, "enable {unit}"),
            Action::DisableUnit { unit } => write!(f, "keep {unit} disabled"),
            Action::ReloadNetworkd => write!(f, "reload systemd-networkd"),
            Action::RestartUnit { unit } => write!(f, "restart {unit}"),
            Action::Dir { path, why, .. } => write!(f, "directory {} ({why})", path.display()),
            Action::PullImage { image } => write!(f, "pull {image}"),
            Action::RemoveContainer { name, why } => write!(f, "remove container {name} ({why})"),
            Action::CreateContainer { name, spec } => {
                write!(f, "create container {name} from {}", spec.image)
            }
            Action::StartContainer { name } => write!(f, "start container {name}"),
            Action::RestartContainer { name, why } => write!(f, "restart container {name} ({why})"),
        }
    }
}

/// A resource's plan: the actions that would bring it in spec, what it looks
/// like now (for the detail line), and remarks for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The resource's state in a few words, e.g. "dummy0 169.254.1.1/32 up".
    pub state: String,
    pub notes: Vec<String>,
    /// Set when the resource is not managed in this run, with the reason.
    pub skipped: Option<String>,
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

    /// True when the plan writes at least one file.
    pub fn writes_files(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Write { .. } | Action::Chmod { .. }))
    }
}

/// The mode and owner every managed file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub mode: u32,
    /// Owner (uid, gid), checked and set only when nodeprep runs as root: an
    /// unprivileged run under `--root` cannot give files away.
    pub owner: Option<(u32, u32)>,
    /// A secret the content holds (redacted from diffs).
    pub secret: Option<String>,
}

/// Pure diff of one file: what must happen for `observed` to become
/// `content` with `spec`'s mode and owner.
pub fn diff_file(
    path: PathBuf,
    content: Vec<u8>,
    spec: FileSpec,
    observed: Option<&Observed>,
) -> Option<Action> {
    let write = |old: Option<Vec<u8>>, why| Action::Write {
        path: path.clone(),
        content: content.clone(),
        mode: spec.mode,
        old,
        why,
        owner: spec.owner,
        secret: spec.secret.clone(),
    };
    let Some(obs) = observed else {
        return Some(write(None, "missing"));
    };
    if obs.content != content {
        return Some(write(Some(obs.content.clone()), "content differs"));
    }
    if spec.owner.is_some_and(|owner| (obs.uid, obs.gid) != owner) {
        return Some(write(Some(obs.content.clone()), "wrong owner"));
    }
    (obs.mode != spec.mode).then_some(Action::Chmod {
        path,
        mode: spec.mode,
        old: obs.mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(content: &[u8], mode: u32, uid: u32) -> Observed {
        Observed {
            content: content.to_vec(),
            mode,
            uid,
            gid: 0,
        }
    }

    const SPEC: FileSpec = FileSpec {
        mode: 0o644,
        owner: Some((0, 0)),
        secret: None,
    };

    #[test]
    fn file_diffs() {
        let p = PathBuf::from("/etc/x");
        assert!(matches!(
            diff_file(p.clone(), b"a".to_vec(), SPEC.clone(), None),
            Some(Action::Write { why: "missing", .. })
        ));
        assert_eq!(
            diff_file(
                p.clone(),
                b"a".to_vec(),
                SPEC.clone(),
                Some(&obs(b"a", 0o644, 0))
            ),
            None
        );
        assert!(matches!(
            diff_file(
                p.clone(),
                b"a".to_vec(),
                SPEC.clone(),
                Some(&obs(b"b", 0o644, 0))
            ),
            Some(Action::Write {
                why: "content differs",
                ..
            })
        ));
        assert_eq!(
            diff_file(
                p.clone(),
                b"a".to_vec(),
                SPEC.clone(),
                Some(&obs(b"a", 0o600, 0))
            ),
            Some(Action::Chmod {
                path: p.clone(),
                mode: 0o644,
                old: 0o600
            })
        );
        assert!(matches!(
            diff_file(
                p.clone(),
                b"a".to_vec(),
                SPEC.clone(),
                Some(&obs(b"a", 0o644, 1000))
            ),
            Some(Action::Write {
                why: "wrong owner",
                ..
            })
        ));
        let unprivileged = FileSpec {
            mode: 0o644,
            owner: None,
            secret: None,
        };
        assert_eq!(
            diff_file(
                p,
                b"a".to_vec(),
                unprivileged,
                Some(&obs(b"a", 0o644, 1000))
            ),
            None
        );
    }
}
