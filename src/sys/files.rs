//! Reading and atomically replacing files.
//!
//! A file is replaced by writing a temporary file in the same directory,
//! fsyncing it, renaming it over the target and fsyncing the directory: a
//! crash at any point leaves either the old or the new file, never a torn one,
//! and the rename is durable once `write_atomic` returns.

use std::fs::{self, File, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// What is on disk at a managed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub content: Vec<u8>,
    /// Permission bits only (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads a file; `Ok(None)` when it does not exist. Anything else that stops
/// the read (a directory in the way, permissions) is an error, never "absent".
pub fn observe(path: &Path) -> Result<Option<Observed>> {
    let content = match fs::read(path) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(Some(Observed {
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Replaces `path` with `content` and `mode`, creating missing parent
/// directories (mode 0755). The new file is owned by the calling user: root in
/// live mode.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    create_dirs(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".nodeprep-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let ctx = || format!("cannot write {}", tmp_name(path));
    tmp.write_all(content).with_context(ctx)?;
    // Set the mode explicitly: tempfile creates 0600 and the umask must not
    // decide what a managed file's mode is.
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid)).with_context(ctx)?;
    }
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .with_context(ctx)?;
    tmp.as_file().sync_all().with_context(ctx)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the new file over {}", path.display()))?;
    sync_dir(dir)
}

/// What is on disk at a directory path: `(mode, uid, gid)`, or `None`.
pub fn observe_dir(path: &Path) -> Result<Option<(u32, u32, u32)>> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Some((m.mode() & 0o7777, m.uid(), m.gid()))),
        Ok(_) => anyhow::bail!("{} exists but is not a directory", path.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
    }
}

/// Creates a directory (and its parents) or fixes its mode and owner.
pub fn ensure_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    create_dirs(path)?;
    fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {mode:o} {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {uid}:{gid} {}", path.display()))?;
    }
    Ok(())
}

/// Sets a file's permission bits in place (when only the mode differs).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {:o} {}", mode, path.display()))
}

fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    // Make the new directory entries themselves durable.
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))
}

fn tmp_name(path: &Path) -> String {
    format!("temporary file for {}", path.display())
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_observe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.conf");
        assert_eq!(observe(&path).unwrap(), None);
        write_atomic(&path, b"hello\n", 0o640, None).unwrap();
        let o = observe(&path).unwrap().unwrap();
        assert_eq!(o.content, b"hello\n");
        assert_eq!(o.mode, 0o640);
        write_atomic(&path, b"bye\n", 0o644, None).unwrap();
        let o = observe(&path).unwrap().unwrap();
        assert_eq!((o.content.as_slice(), o.mode), (&b"bye\n"[..], 0o644));
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.conf")]);
    }

    #[test]
    fn a_directory_in_the_way_is_an_error_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(observe(dir.path()).is_err());
    }
}
