//! Managed files, handled the same way by every resource: observe a path
//! together with what nodeprep's record says about it, then diff it towards
//! present (content, mode, owner) or absent (removed, or its original put
//! back), and plan the removal of directories nodeprep created once they are
//! empty.
//!
//! Ownership rules (nothing is ever lost):
//! - a file that holds what nodeprep last wrote (per the record) is
//!   nodeprep's;
//! - one that predates nodeprep is kept as the original before it is first
//!   replaced, and put back by `remove`;
//! - one someone changed after nodeprep wrote it is kept as an edited copy
//!   before nodeprep replaces or removes it;
//! - without a record entry, a file holding exactly what nodeprep would write
//!   is nodeprep's (hosts set up before the record existed); anything else is
//!   someone else's and `remove` leaves it alone.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::engine::{Action, Current, Ensure, FileOp, Forget, Host, HostPath, Keep, Want};
use crate::state::{self, FileEntry, Original};
use crate::sys::files;

/// One managed path as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSeen {
    pub path: HostPath,
    pub current: Option<Current>,
    /// What the record says nodeprep did to this path.
    pub entry: Option<FileEntry>,
    /// The kept original, when the record says there is one.
    pub original: Option<Vec<u8>>,
}

/// The mode and owner a managed file gets, and the secret it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub mode: u32,
    /// Owner (uid, gid), checked and set only when nodeprep runs as root.
    pub owner: Option<(u32, u32)>,
    /// A secret the content holds (redacted from diffs).
    pub secret: Option<String>,
}

impl FileSpec {
    /// The usual managed file: 0644, root-owned.
    pub fn plain(want: &Want) -> FileSpec {
        FileSpec {
            mode: 0o644,
            owner: want.as_root.then_some((0, 0)),
            secret: None,
        }
    }
}

pub fn observe(host: &Host, host_path: &Path, ensure: Ensure) -> Result<FileSeen> {
    let path = host.path(host_path);
    let current = files::observe(&path.real)?.map(|o| Current {
        content: o.content,
        mode: o.mode,
        uid: o.uid,
        gid: o.gid,
    });
    let entry = host.store.record.files.get(host_path).cloned();
    // The kept original is read for both directions: `remove` puts it
    // back, and `apply` recognises a file that still holds it (a run killed
    // after recording the change but before making it).
    let original = match (&entry, ensure) {
        (
            Some(FileEntry {
                original: Original::Kept { .. },
                ..
            }),
            Ensure::Absent | Ensure::Present,
        ) => {
            let kept = host.store.original_path(host_path);
            state::read_kept(&kept)?
        }
        _ => None,
    };
    Ok(FileSeen {
        path,
        current,
        entry,
        original,
    })
}

fn is_ours(seen: &FileSeen, content: &[u8]) -> bool {
    seen.entry
        .as_ref()
        .is_some_and(|e| e.written == state::digest(content))
}

/// What must happen for the path to hold `content` with `spec`'s mode and
/// owner (nothing when it does).
pub fn present(seen: &FileSeen, content: Vec<u8>, spec: FileSpec) -> Option<Action> {
    let write = |old: Option<Current>, why, keep| {
        Action::File(FileOp::Write {
            path: seen.path.clone(),
            content: content.clone(),
            mode: spec.mode,
            owner: spec.owner,
            old,
            keep,
            why,
            secret: spec.secret.clone(),
        })
    };
    let Some(cur) = &seen.current else {
        return Some(write(None, "missing", Keep::Nothing));
    };
    let keep = if seen.entry.is_none() {
        Keep::Original
    } else if cur.content == content
        || is_ours(seen, &cur.content)
        || seen.original.as_deref() == Some(cur.content.as_slice())
    {
        Keep::Nothing
    } else {
        Keep::Edited
    };
    if cur.content != content {
        return Some(write(Some(cur.clone()), "content differs", keep));
    }
    let owner_wrong = spec.owner.is_some_and(|o| (cur.uid, cur.gid) != o);
    let mode_wrong = cur.mode != spec.mode;
    match (owner_wrong, mode_wrong) {
        (false, false) => None,
        // A file nodeprep never wrote keeps its original mode and owner too.
        _ if keep == Keep::Original => Some(write(
            Some(cur.clone()),
            if owner_wrong {
                "wrong owner"
            } else {
                "wrong mode"
            },
            keep,
        )),
        (true, _) => Some(write(Some(cur.clone()), "wrong owner", keep)),
        (false, true) => Some(Action::File(FileOp::Chmod {
            path: seen.path.clone(),
            mode: spec.mode,
            old: cur.mode,
        })),
    }
}

/// What undoing nodeprep's file takes: remove it, or put its original back.
/// `ours_now` is what nodeprep would write there today (`None` when it
/// cannot say), the test for files without a record entry.
pub struct Undo {
    pub action: Option<Action>,
    pub note: Option<String>,
    pub forget: Option<Forget>,
}

pub fn absent(seen: &FileSeen, ours_now: Option<&[u8]>, secret: Option<String>) -> Undo {
    let forget = seen
        .entry
        .as_ref()
        .map(|_| Forget::File(seen.path.host.clone()));
    let undo = |action: Option<FileOp>, note: Option<String>| Undo {
        action: action.map(Action::File),
        note,
        forget: forget.clone(),
    };
    let Some(entry) = &seen.entry else {
        return match &seen.current {
            None => undo(None, None),
            Some(cur) if ours_now == Some(cur.content.as_slice()) => undo(
                Some(FileOp::Remove {
                    path: seen.path.clone(),
                    old: cur.clone(),
                    keep: Keep::Nothing,
                    secret,
                }),
                None,
            ),
            Some(_) => undo(
                None,
                Some(format!(
                    "{} left alone: nodeprep did not write it",
                    seen.path
                )),
            ),
        };
    };
    let keep = match &seen.current {
        Some(cur) if !is_ours(seen, &cur.content) => Keep::Edited,
        _ => Keep::Nothing,
    };
    match (entry.original, &seen.current) {
        (Original::Kept { .. }, cur) => match &seen.original {
            Some(original) => {
                if cur.as_ref().is_some_and(|c| {
                    c.content == *original && Original::Kept {
                        mode: c.mode,
                        uid: c.uid,
                        gid: c.gid,
                    } == entry.original
                }) {
                    // Already as it was before nodeprep.
                    return undo(None, None);
                }
                undo(
                    Some(FileOp::Restore {
                        path: seen.path.clone(),
                        original: original.clone(),
                        how: entry.original,
                        old: cur.clone(),
                        keep,
                        secret,
                    }),
                    None,
                )
            }
            None => Undo {
                action: None,
                note: Some(format!(
                    "the original of {} is missing from nodeprep's state directory: the file is left as it is",
                    seen.path
                )),
                forget: None,
            },
        },
        (Original::Absent, Some(cur)) => undo(
            Some(FileOp::Remove {
                path: seen.path.clone(),
                old: cur.clone(),
                keep,
                secret,
            }),
            None,
        ),
        (Original::Absent, None) => undo(None, None),
    }
}

/// Directories nodeprep created above some managed paths, each with what it
/// holds now (host paths), deepest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirsSeen(pub Vec<(HostPath, Vec<PathBuf>)>);

pub fn observe_dirs(host: &Host, paths: &[&Path]) -> Result<DirsSeen> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for p in paths {
        for a in p.ancestors().skip(1) {
            if host.store.record.dirs.contains(a) {
                dirs.insert(a.to_path_buf());
            }
        }
    }
    let mut seen = Vec::new();
    for d in dirs {
        let path = host.path(&d);
        let children = files::list_dir(&path.real)?
            .into_iter()
            .map(|n| d.join(n))
            .collect();
        seen.push((path, children));
    }
    seen.sort_by_key(|(p, _)| std::cmp::Reverse(p.host.components().count()));
    Ok(DirsSeen(seen))
}

/// Removal of the directories nodeprep created that nothing will be left
/// in once this run's removals (earlier resources' and `own`) are done.
pub fn rmdirs(want: &Want, dirs: &DirsSeen, own: &[Action]) -> Vec<Action> {
    let mut gone = want.deleted_paths();
    gone.extend(
        own.iter()
            .filter(|a| a.deletes_path())
            .filter_map(|a| a.file_path().map(|p| p.host.clone())),
    );
    let mut out = Vec::new();
    for (dir, children) in &dirs.0 {
        if gone.contains(&dir.host) {
            continue;
        }
        if children.iter().all(|c| gone.contains(c)) {
            gone.insert(dir.host.clone());
            out.push(Action::File(FileOp::Rmdir { path: dir.clone() }));
        }
    }
    out
}

/// Mode, owner and group of a directory, or `None` when absent.
pub fn dir_owner(path: &Path) -> Result<Option<(u32, u32, u32)>> {
    files::observe_dir(path)
}

/// The mode, uid and gid of a path's metadata (for tests and reports).
pub fn mode_of(meta: &std::fs::Metadata) -> (u32, u32, u32) {
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(current: Option<&[u8]>, entry: Option<FileEntry>, original: Option<&[u8]>) -> FileSeen {
        FileSeen {
            path: HostPath {
                host: "/etc/x".into(),
                real: "/r/etc/x".into(),
            },
            current: current.map(|c| Current {
                content: c.to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }),
            entry,
            original: original.map(<[u8]>::to_vec),
        }
    }

    fn entry(original: Original, written: &[u8]) -> Option<FileEntry> {
        Some(FileEntry {
            original,
            written: state::digest(written),
        })
    }

    const KEPT: Original = Original::Kept {
        mode: 0o600,
        uid: 0,
        gid: 0,
    };

    fn spec() -> FileSpec {
        FileSpec {
            mode: 0o644,
            owner: Some((0, 0)),
            secret: None,
        }
    }

    fn shown(a: Option<Action>) -> String {
        a.map(|a| a.to_string()).unwrap_or_default()
    }

    #[test]
    fn present_keeps_what_nodeprep_did_not_write() {
        assert_eq!(
            shown(present(&seen(None, None, None), b"new".to_vec(), spec())),
            "write /etc/x (missing)"
        );
        assert_eq!(
            shown(present(
                &seen(Some(b"hand"), None, None),
                b"new".to_vec(),
                spec()
            )),
            "write /etc/x (content differs, original kept)"
        );
        let ours = entry(Original::Absent, b"old");
        assert_eq!(
            shown(present(
                &seen(Some(b"old"), ours.clone(), None),
                b"new".to_vec(),
                spec()
            )),
            "write /etc/x (content differs)"
        );
        assert_eq!(
            shown(present(
                &seen(Some(b"edited"), ours, None),
                b"new".to_vec(),
                spec()
            )),
            "write /etc/x (content differs, edited copy kept)"
        );
        assert_eq!(
            present(&seen(Some(b"new"), None, None), b"new".to_vec(), spec()),
            None
        );
    }

    #[test]
    fn absent_removes_or_restores_and_never_loses_an_edit() {
        let u = absent(
            &seen(Some(b"ours"), entry(Original::Absent, b"ours"), None),
            None,
            None,
        );
        assert_eq!(shown(u.action), "remove /etc/x");
        let u = absent(
            &seen(Some(b"edit"), entry(Original::Absent, b"ours"), None),
            None,
            None,
        );
        assert_eq!(shown(u.action), "remove /etc/x, edited copy kept");
        let u = absent(
            &seen(Some(b"ours"), entry(KEPT, b"ours"), Some(b"orig")),
            None,
            None,
        );
        assert_eq!(shown(u.action), "restore the original /etc/x");
        let u = absent(&seen(None, entry(KEPT, b"ours"), Some(b"orig")), None, None);
        assert_eq!(shown(u.action), "restore the original /etc/x");
        let u = absent(&seen(Some(b"hand"), None, None), Some(b"ours"), None);
        assert!(u.action.is_none() && u.note.unwrap().contains("left alone"));
        let u = absent(&seen(Some(b"ours"), None, None), Some(b"ours"), None);
        assert_eq!(shown(u.action), "remove /etc/x");
        let u = absent(&seen(Some(b"ours"), entry(KEPT, b"ours"), None), None, None);
        assert!(u.action.is_none() && u.note.unwrap().contains("missing"));
    }
}
