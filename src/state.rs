//! The record nodeprep keeps in `/var/lib/nodeprep` (under DIR with
//! `--root`): what `remove` needs to undo `apply` exactly, and the originals
//! of files nodeprep replaced.
//!
//! - `state.json`: which managed files nodeprep wrote (and the hash of what it
//!   wrote, so a later edit is recognised), how each path was before (absent,
//!   or an original kept here with its mode and owner), the directories and
//!   links it created and the units it enabled.
//! - `originals/<path>`: the content a managed path had before nodeprep first
//!   replaced it; `remove` puts it back.
//! - `edited/<path>`: the last content someone else put into a file nodeprep
//!   manages, kept when nodeprep replaces or removes it.
//!
//! Every change is recorded (atomically) before the change it describes, so a
//! crash leaves a record that claims at most one step too much, never too
//! little. `apply` and `check` never depend on the record: a missing or
//! unreadable one only makes `remove` more careful, and the report says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sys::files;

/// Where the record lives on the host.
pub const STATE_DIR: &str = "/var/lib/nodeprep";
const RECORD_FILE: &str = "state.json";
const ORIGINALS_DIR: &str = "originals";
const EDITED_DIR: &str = "edited";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    /// Managed files nodeprep has written, by host path.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, FileEntry>,
    /// Directories nodeprep created, by host path.
    #[serde(default)]
    pub dirs: BTreeSet<PathBuf>,
    /// Links nodeprep created (not the kernel's dummy module, not someone else).
    #[serde(default)]
    pub links: BTreeSet<String>,
    /// Units that were disabled until nodeprep enabled them.
    #[serde(default)]
    pub enabled_units: BTreeSet<String>,
    /// Units that were not running until nodeprep started them (Debian's
    /// dnsmasq, whose packaged configuration keeps it from starting beside
    /// systemd-resolved until nodeprep's file is in place): `remove` stops
    /// them again instead of restarting them into that failure.
    #[serde(default)]
    pub started_units: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// How the path was before nodeprep first wrote it.
    pub original: Original,
    /// SHA-256 of the content nodeprep last wrote (hex).
    pub written: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Original {
    /// Nothing was there: `remove` deletes the file.
    Absent,
    /// A file was there; its content is kept under `originals/` and
    /// `remove` puts it back with this mode and owner.
    Kept { mode: u32, uid: u32, gid: u32 },
}

/// How far the record on disk can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Read and valid.
    Loaded,
    /// There is none: a first run, or a host set up before nodeprep kept one.
    Missing,
    /// There is one, but it cannot be parsed (why).
    Corrupt(String),
    /// Something that is not a regular file, or too large, or unreadable,
    /// is where the record belongs (why): nodeprep refuses to run rather
    /// than read or replace it.
    Unusable(String),
}

/// The record and where it lives (under `--root` when given).
#[derive(Debug, Clone)]
pub struct Store {
    /// The state directory as seen by this run (re-based under `--root`).
    pub dir: PathBuf,
    pub record: Record,
    pub trust: Trust,
}

impl Record {
    pub fn new() -> Record {
        Record {
            version: VERSION,
            ..Record::default()
        }
    }

    /// True when nothing nodeprep set up is left to undo.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.links.is_empty()
            && self.enabled_units.is_empty()
            && self.started_units.is_empty()
    }
}

impl Store {
    /// Reads the record in `dir` (inside the run's root, as a regular file of
    /// at most [`files::MAX_FILE`] bytes). Never fails: a record that cannot
    /// be parsed is reported through [`Trust`] and replaced by an empty one;
    /// one that cannot be read at all is [`Trust::Unusable`].
    pub fn load(dir: PathBuf) -> Store {
        let path = dir.join(RECORD_FILE);
        let (record, trust) = match files::read_regular(&path, files::MAX_FILE) {
            Ok(Some(seen)) => match serde_json::from_slice::<Record>(&seen.content) {
                Ok(r) if r.version == VERSION => (r, Trust::Loaded),
                Ok(r) => (
                    Record::new(),
                    Trust::Corrupt(format!("{}: unknown version {}", path.display(), r.version)),
                ),
                Err(e) => (
                    Record::new(),
                    Trust::Corrupt(format!("{}: {e}", path.display())),
                ),
            },
            Ok(None) => (Record::new(), Trust::Missing),
            Err(e) => (
                Record::new(),
                Trust::Unusable(format!("nodeprep's state record: {e:#}")),
            ),
        };
        Store { dir, record, trust }
    }

    pub fn record_path(&self) -> PathBuf {
        self.dir.join(RECORD_FILE)
    }

    /// Where the original of host path `path` is kept.
    pub fn original_path(&self, path: &Path) -> PathBuf {
        self.dir.join(ORIGINALS_DIR).join(relative(path))
    }

    /// Where the last foreign edit of host path `path` is kept.
    pub fn edited_path(&self, path: &Path) -> PathBuf {
        self.dir.join(EDITED_DIR).join(relative(path))
    }

    /// The record as JSON, as it is saved.
    pub fn serialized(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.record).expect("serializing the record");
        bytes.push(b'\n');
        bytes
    }

    pub fn describe_trust(&self) -> Option<String> {
        match &self.trust {
            Trust::Loaded | Trust::Missing => None,
            Trust::Unusable(why) => Some(why.clone()),
            Trust::Corrupt(why) => Some(format!(
                "the state record is unreadable ({why}); nodeprep converges without it and starts a new one, but `remove` can only undo what it can recognise"
            )),
        }
    }
}

/// Hex SHA-256 of `bytes`, as recorded for written files.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A host path as a path relative to `/`, to re-base it under a directory.
pub fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// Reads a kept original (or edited copy), as a regular file inside the
/// root; `None` when it is missing.
pub fn read_kept(path: &Path) -> Result<Option<Vec<u8>>> {
    files::read_regular(path, files::MAX_FILE)
        .map(|seen| seen.map(|s| s.content))
        .with_context(|| format!("cannot read the kept copy {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_unknown_fields_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::load(dir.path().to_path_buf());
        assert_eq!(store.trust, Trust::Missing);
        store.record.files.insert(
            PathBuf::from("/etc/dnsmasq.d/consul.conf"),
            FileEntry {
                original: Original::Kept {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
                written: digest(b"x"),
            },
        );
        store.record.links.insert("dummy0".into());
        std::fs::write(store.record_path(), store.serialized()).unwrap();
        let again = Store::load(dir.path().to_path_buf());
        assert_eq!(again.trust, Trust::Loaded);
        assert_eq!(again.record, store.record);

        std::fs::write(store.record_path(), b"{\"version\":1,\"bogus\":1}").unwrap();
        let bad = Store::load(dir.path().to_path_buf());
        assert!(matches!(bad.trust, Trust::Corrupt(_)), "{:?}", bad.trust);
        assert!(bad.record.is_empty());
        std::fs::write(store.record_path(), b"\xff\xfe").unwrap();
        assert!(matches!(
            Store::load(dir.path().to_path_buf()).trust,
            Trust::Corrupt(_)
        ));
    }

    #[test]
    fn kept_copies_live_under_the_state_dir() {
        let store = Store::load(PathBuf::from("/r/var/lib/nodeprep"));
        assert_eq!(
            store.original_path(Path::new("/etc/environment")),
            PathBuf::from("/r/var/lib/nodeprep/originals/etc/environment")
        );
        assert_eq!(
            store.edited_path(Path::new("/etc/environment")),
            PathBuf::from("/r/var/lib/nodeprep/edited/etc/environment")
        );
    }
}
