//! Reading and atomically replacing files.
//!
//! A file is replaced by writing a temporary file in the same directory,
//! fsyncing it, renaming it over the target and fsyncing the directory: a
//! crash at any point leaves either the old or the new file, never a torn one,
//! and the rename is durable once `write_atomic` returns.

use std::fs::{self, File, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Replaces `path` with `content` and `mode`; the parent directory must
/// exist. The new file is owned by the calling user (root in live mode)
/// unless `owner` says otherwise.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".nodeprep-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let ctx = || format!("cannot write {}", tmp_name(path));
    tmp.write_all(content).with_context(ctx)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid)).with_context(ctx)?;
    }
    // Set the mode explicitly (after fchown, which may clear set-id bits):
    // tempfile creates 0600 and the umask must not decide what a managed
    // file's mode is.
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

/// The names in a directory (empty when it does not exist).
pub fn list_dir(path: &Path) -> Result<Vec<std::ffi::OsString>> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", path.display())),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(
            e.with_context(|| format!("cannot list {}", path.display()))?
                .file_name(),
        );
    }
    names.sort();
    Ok(names)
}

/// `path` and those of its ancestors that do not exist, outermost first.
pub fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

/// Creates `dirs` (outermost first, as [`missing_dirs`] lists them) with an
/// explicit mode, whatever the umask, and makes each new entry durable.
pub fn create_dirs(dirs: &[PathBuf], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    for dir in dirs {
        match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create directory {}", dir.display()))
            }
        }
        // mkdir applies the umask; a hardened host's 027 would make the
        // directory unreadable for the consul user of the container.
        fs::set_permissions(dir, Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {mode:o} {}", dir.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {uid}:{gid} {}", dir.display()))?;
        }
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates a directory (and its parents) or fixes its mode and owner.
pub fn ensure_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let missing = missing_dirs(path);
    if let Some((last, parents)) = missing.split_last() {
        create_dirs(parents, 0o755, None)?;
        create_dirs(std::slice::from_ref(last), mode, owner)?;
    }
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

/// Deletes a file durably; one that is already gone is fine.
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Removes an empty directory.
pub fn remove_dir(path: &Path) -> Result<()> {
    fs::remove_dir(path).with_context(|| format!("cannot remove directory {}", path.display()))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Removes a directory and everything in it; one that is gone is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}

/// Removes the empty directories of a tree, bottom up; anything holding a
/// file stays. Best effort.
pub fn remove_empty_tree(path: &Path) {
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_tree(&e.path());
        }
    }
    let _ = fs::remove_dir(path);
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
        let missing = missing_dirs(path.parent().unwrap());
        assert_eq!(missing, vec![dir.path().join("a"), dir.path().join("a/b")]);
        create_dirs(&missing, 0o755, None).unwrap();
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

#[cfg(test)]
mod dir_tests {
    use super::*;

    #[test]
    fn directories_get_their_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let made = missing_dirs(&dir.path().join("x/y"));
        let result = create_dirs(&made, 0o755, None);
        nix::sys::stat::umask(old);
        result.unwrap();
        for d in made {
            assert_eq!(
                fs::metadata(&d).unwrap().mode() & 0o7777,
                0o755,
                "{}",
                d.display()
            );
        }
    }
}
