//! Reading and atomically replacing files, always inside the run's root
//! (`sys::rooted`: `/` live, DIR with `--root`).
//!
//! A file is replaced by writing a temporary file (`.nodeprep-*`) in the
//! same directory, fsyncing it, renaming it over the target and fsyncing the
//! directory: a crash at any point leaves either the old or the new file,
//! never a torn one, and the rename is durable once `write_atomic` returns.
//! A temporary file a killed run left behind is removed by the next `apply`
//! or `remove` ([`sweep_temp`]).
//!
//! Every managed file is read and written as a regular file only: its own
//! name is never followed (a symbolic link there is an error, never a way
//! out of the root), a FIFO, socket or device is refused before it is opened
//! for reading (nothing blocks, nothing endless is read), and reads stop at
//! a size cap ([`MAX_FILE`]). The directories above it are resolved inside
//! the root, links included.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use rustix::fs::FileType;

use super::rooted::{self, DirFd, Root};

/// The largest managed file, kept copy or state record nodeprep reads
/// (1 MiB): the files it manages are a few hundred bytes, and a larger one
/// is refused rather than read into memory.
pub const MAX_FILE: u64 = 1 << 20;

/// Prefix of the temporary files of [`write_atomic`].
pub const TEMP_PREFIX: &str = ".nodeprep-";

/// What is on disk at a managed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub content: Vec<u8>,
    /// Permission bits only (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads a managed file; `Ok(None)` when it does not exist. Anything else
/// that stops the read (a directory, link, FIFO or device in its place, a
/// file over [`MAX_FILE`], permissions) is an error, never "absent".
pub fn observe(path: &Path) -> Result<Option<Observed>> {
    read_regular(path, MAX_FILE)
}

/// Reads the regular file `path` (inside the root), at most `cap` bytes.
/// Its name is not followed; anything but a regular file is refused
/// without being opened for reading.
pub fn read_regular(path: &Path, cap: u64) -> Result<Option<Observed>> {
    let root = rooted::current()?;
    let Some((dir, name)) = root.parent(path)? else {
        return Ok(None);
    };
    let Some(st) = stat_entry(&dir, &name, path)? else {
        return Ok(None);
    };
    require_regular(&st, path)?;
    let fd = openat(
        &dir,
        name.as_os_str(),
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(e, "cannot open", path))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    let content = read_capped(file, &meta, cap, path)?;
    if meta.ino() != st.st_ino || meta.dev() != st.st_dev {
        bail!("{} was replaced while nodeprep read it", path.display());
    }
    Ok(Some(Observed {
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Reads an operator's input outside the root (the configuration, the
/// gossip key file): links are followed as the operator set them up, but
/// only a regular file is read, never more than `cap` bytes, and a FIFO or
/// device is refused before it is opened.
pub fn read_input(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind_of(meta.mode())
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind_of(opened.mode())
        )));
    }
    read_capped(file, &opened, cap, path).map_err(|e| std::io::Error::other(format!("{e:#}")))
}

/// Reads the open regular file `file`, whose metadata (`fstat`) the caller
/// has, at most `cap` bytes.
fn read_capped(file: File, meta: &std::fs::Metadata, cap: u64, path: &Path) -> Result<Vec<u8>> {
    if !meta.is_file() {
        bail!(
            "{} is {}, not a regular file",
            path.display(),
            kind_of(meta.mode())
        );
    }
    let too_big = || {
        anyhow!(
            "{} is larger than {} bytes, more than nodeprep reads",
            path.display(),
            cap
        )
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut content = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut content)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if content.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(content)
}

/// `lstat` of `name` in `dir`; `None` when absent.
fn stat_entry(dir: &impl AsFd, name: &OsStr, path: &Path) -> Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(io_error(e, "cannot stat", path)),
    }
}

fn require_regular(st: &FileStat, path: &Path) -> Result<()> {
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if fmt == SFlag::S_IFREG {
        return Ok(());
    }
    if fmt == SFlag::S_IFLNK {
        bail!(
            "{} is a symbolic link: nodeprep reads and writes a managed file only as a regular file, never through a link (put the file itself there)",
            path.display()
        );
    }
    bail!(
        "{} is {}, not a regular file: nodeprep reads and writes a managed file only as a regular file (remove it)",
        path.display(),
        kind_of(st.st_mode)
    )
}

/// A file type in words, from `st_mode`.
pub fn kind_of(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of an unknown type",
    }
}

fn io_error(e: Errno, what: &str, path: &Path) -> anyhow::Error {
    anyhow!("{what} {}: {}", path.display(), std::io::Error::from(e))
}

/// The parent directory of `path` inside the root, which must exist.
fn existing_parent(root: &Root, path: &Path) -> Result<(DirFd, OsString)> {
    root.parent(path)?.ok_or_else(|| {
        anyhow!(
            "the directory of {} does not exist inside {} (or is a link to a missing place)",
            path.display(),
            root.dir().display()
        )
    })
}

/// Replaces `path` with `content` and `mode`; the parent directory must
/// exist. The new file is owned by the calling user (root in live mode)
/// unless `owner` says otherwise. Only a regular file (or nothing) is ever
/// replaced: a link, directory, FIFO or device in its place is an error.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let root = rooted::current()?;
    let (dir, name) = existing_parent(&root, path)?;
    if let Some(st) = stat_entry(&dir, &name, path)? {
        require_regular(&st, path)?;
    }
    let (tmp, file) = create_temp(&dir, path)?;
    let ctx = || format!("cannot write {}", tmp_name(path));
    let written = (|| -> Result<()> {
        (&file).write_all(content).with_context(ctx)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).with_context(ctx)?;
        }
        // Set the mode explicitly (after fchown, which may clear set-id
        // bits): the temporary file is created 0600 and the umask must not
        // decide what a managed file's mode is.
        file.set_permissions(Permissions::from_mode(mode))
            .with_context(ctx)?;
        file.sync_all().with_context(ctx)?;
        renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str())
            .map_err(|e| io_error(e, "cannot rename the new file over", path))
    })();
    if written.is_err() {
        let _ = unlinkat(&dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    written?;
    sync_fd(&dir, path.parent().unwrap_or(path))
}

/// Creates a fresh temporary file in `dir`, 0600, never through a link.
fn create_temp(dir: &impl AsFd, path: &Path) -> Result<(OsString, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    for _ in 0..32 {
        let n = seed.wrapping_add(
            COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let name = OsString::from(format!("{TEMP_PREFIX}{:012x}", n & 0xffff_ffff_ffff));
        match openat(
            dir,
            name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(Errno::EEXIST) => continue,
            Err(e) => {
                return Err(anyhow!(
                    "cannot create a temporary file beside {}: {}",
                    path.display(),
                    std::io::Error::from(e)
                ))
            }
        }
    }
    bail!("cannot create a temporary file beside {}", path.display())
}

/// What [`sweep_temp`] did in one directory.
#[derive(Debug, Default)]
pub struct Swept {
    /// The temporary files removed.
    pub removed: Vec<PathBuf>,
    /// The directories in it (links to directories excluded), when asked for.
    pub subdirs: Vec<PathBuf>,
}

/// Removes the temporary files (`.nodeprep-*`) a killed run left in
/// directory `dir`; returns their paths and, with `subdirs`, the
/// directories `dir` holds (never links), for a caller that sweeps a whole
/// tree. Only regular files are removed. Call it only while holding the lock.
pub fn sweep_temp(dir: &Path, subdirs: bool) -> Result<Swept> {
    let root = rooted::current()?;
    let mut swept = Swept::default();
    let Some(fd) = root.open_dir(dir)? else {
        return Ok(swept);
    };
    for (name, kind) in entries(&fd, dir)? {
        let temp = name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes());
        // The directory entry's type is enough to find directories; a
        // temporary file is stat'ed before it is removed whatever the entry
        // says, and so is an entry of a type the filesystem does not give.
        let kind = if temp || (subdirs && kind == FileType::Unknown) {
            match stat_entry(&fd, &name, &dir.join(&name))? {
                Some(st) => FileType::from_raw_mode(st.st_mode),
                None => continue,
            }
        } else {
            kind
        };
        match kind {
            FileType::Directory if subdirs => swept.subdirs.push(dir.join(&name)),
            FileType::RegularFile if temp => {
                let path = dir.join(&name);
                unlinkat(&fd, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| io_error(e, "cannot remove", &path))?;
                swept.removed.push(path);
            }
            _ => {}
        }
    }
    if !swept.removed.is_empty() {
        sync_fd(&fd, dir)?;
    }
    Ok(swept)
}

/// What is on disk at a directory path: `(mode, uid, gid)`, or `None`.
/// The path is resolved inside the root, links included.
pub fn observe_dir(path: &Path) -> Result<Option<(u32, u32, u32)>> {
    let root = rooted::current()?;
    match root.open_dir(path) {
        Ok(Some(fd)) => {
            let st = nix::sys::stat::fstat(&fd).map_err(|e| io_error(e, "cannot stat", path))?;
            Ok(Some((st.st_mode & 0o7777, st.st_uid, st.st_gid)))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            if let Ok(Some((dir, name))) = root.parent(path) {
                if let Ok(Some(st)) = stat_entry(&dir, &name, path) {
                    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
                        != SFlag::S_IFDIR
                        && SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
                            != SFlag::S_IFLNK
                    {
                        bail!(
                            "{} exists but is not a directory ({})",
                            path.display(),
                            kind_of(st.st_mode)
                        );
                    }
                }
            }
            Err(e)
        }
    }
}

/// True when `path` is a directory inside the root (links followed there).
pub fn is_dir(path: &Path) -> bool {
    rooted::current()
        .and_then(|r| r.open_dir(path))
        .is_ok_and(|d| d.is_some())
}

/// True when `path`'s own name is a symbolic link (inside the root).
pub fn is_link(path: &Path) -> bool {
    let Ok(root) = rooted::current() else {
        return false;
    };
    match root.parent(path) {
        Ok(Some((dir, name))) => fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| {
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK
            }),
        _ => false,
    }
}

/// Where the symbolic link at `path` points (its own name is not followed;
/// the directories above it are resolved inside the root), or `None` when
/// `path` is no link.
pub fn read_link(path: &Path) -> Option<PathBuf> {
    let root = rooted::current().ok()?;
    let (dir, name) = root.parent(path).ok()??;
    nix::fcntl::readlinkat(&dir, name.as_os_str())
        .ok()
        .map(PathBuf::from)
}

/// Reads the file at `path` following symbolic links (inside the root: an
/// absolute target means the root's own path), at most `cap` bytes, for a
/// file nodeprep only looks at (`/etc/resolv.conf` linking to resolvconf's
/// or resolved's file). `None` when nothing is there.
pub fn read_through_links(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let root = rooted::current()?;
    let mut path = path.to_path_buf();
    for _ in 0..8 {
        let Some(target) = read_link(&path) else {
            return Ok(read_regular(&path, cap)?.map(|o| o.content));
        };
        path = if target.is_absolute() {
            root.dir().join(target.strip_prefix("/").unwrap_or(&target))
        } else {
            path.parent().unwrap_or(Path::new("/")).join(target)
        };
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

/// True when something is at `path` inside the root (resolved there).
pub fn exists(path: &Path) -> bool {
    let Ok(root) = rooted::current() else {
        return false;
    };
    match root.parent(path) {
        Ok(Some((dir, name))) => fstatat(&dir, name.as_os_str(), AtFlags::empty()).is_ok(),
        _ => false,
    }
}

/// The names in a directory (empty when it does not exist).
pub fn list_dir(path: &Path) -> Result<Vec<OsString>> {
    let root = rooted::current()?;
    match root.open_dir(path)? {
        Some(fd) => names(&fd, path),
        None => Ok(Vec::new()),
    }
}

fn names(dir: &impl AsFd, path: &Path) -> Result<Vec<OsString>> {
    Ok(entries(dir, path)?.into_iter().map(|(n, _)| n).collect())
}

/// The entries of the directory open at `dir` (`.` and `..` left out),
/// sorted by name, each with the type its directory entry gives
/// (`Unknown` where the filesystem gives none).
///
/// Read with getdents64 on `dir` itself, from the start (the descriptor may
/// be one `rooted::reuse_dirs` keeps and was listed before): listing a
/// directory opens nothing. A descriptor that cannot be read (`O_PATH`, a
/// directory an unprivileged run may search but not list) is listed through
/// a fresh one, which fails as that run's listing must.
fn entries(dir: &impl AsFd, path: &Path) -> Result<Vec<(OsString, FileType)>> {
    let listed = match read_entries(dir) {
        Err(Errno::EBADF) => {
            let fd = openat(
                dir,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_error(e, "cannot list", path))?;
            read_entries(&fd)
        }
        listed => listed,
    };
    listed.map_err(|e| io_error(e, "cannot list", path))
}

fn read_entries(dir: &impl AsFd) -> std::result::Result<Vec<(OsString, FileType)>, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
    rustix::fs::seek(dir, rustix::fs::SeekFrom::Start(0)).map_err(errno)?;
    // 32 KiB, as glibc's readdir: a few hundred entries per call.
    let mut buf = Vec::with_capacity(32 << 10);
    let mut raw = rustix::fs::RawDir::new(dir, buf.spare_capacity_mut());
    let mut out = Vec::new();
    while let Some(entry) = raw.next() {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push((OsStr::from_bytes(name).to_os_string(), entry.file_type()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `path` and those of its ancestors that do not exist inside the root,
/// outermost first. An entry of any kind (a dangling link included) counts
/// as existing: creating a directory never goes through it.
pub fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let Ok(root) = rooted::current() else {
        return Vec::new();
    };
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|p| {
            match root.relative(p) {
                Ok(rel) if !rel.as_os_str().is_empty() => {}
                _ => return false,
            }
            match root.parent(p) {
                Ok(None) => true,
                Ok(Some((dir, name))) => matches!(
                    fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
                    Err(Errno::ENOENT)
                ),
                Err(_) => false,
            }
        })
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

/// Creates `dirs` (outermost first, as [`missing_dirs`] lists them) with an
/// explicit mode, whatever the umask, and makes each new entry durable.
pub fn create_dirs(dirs: &[PathBuf], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let root = rooted::current()?;
    for dir in dirs {
        let (parent, name) = existing_parent(&root, dir)?;
        match mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(mode)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => match root.open_dir(dir)? {
                Some(_) => continue,
                None => bail!(
                    "cannot create directory {}: a symbolic link to a missing place is in the way",
                    dir.display()
                ),
            },
            Err(e) => return Err(io_error(e, "cannot create directory", dir)),
        }
        let fd = openat(
            &parent,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(e, "cannot open new directory", dir))?;
        // mkdir applies the umask; a hardened host's 027 would make the
        // directory unreadable for the consul user of the container.
        set_dir_attrs(&fd, dir, mode, owner)?;
        sync_fd(&parent, dir.parent().unwrap_or(dir))?;
    }
    Ok(())
}

fn set_dir_attrs(dir: &impl AsFd, path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(dir, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {uid}:{gid} {}", path.display()))?;
    }
    nix::sys::stat::fchmod(dir, Mode::from_bits_truncate(mode))
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot chmod {mode:o} {}", path.display()))
}

/// Creates a directory (and its parents, 0755) or fixes its mode and owner.
pub fn ensure_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let missing = missing_dirs(path);
    if let Some((last, parents)) = missing.split_last() {
        create_dirs(parents, 0o755, None)?;
        create_dirs(std::slice::from_ref(last), mode, owner)?;
    }
    let root = rooted::current()?;
    let fd = root
        .open_dir(path)?
        .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
    set_dir_attrs(&fd, path, mode, owner)
}

/// Sets a file's permission bits in place (when only the mode differs).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    let root = rooted::current()?;
    let (dir, name) = existing_parent(&root, path)?;
    let st = stat_entry(&dir, &name, path)?
        .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
    require_regular(&st, path)?;
    let fd = openat(
        &dir,
        name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(e, "cannot open", path))?;
    File::from(fd)
        .set_permissions(Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {:o} {}", mode, path.display()))
}

/// Deletes a file durably; one that is already gone is fine. A link is
/// removed itself, never what it points to.
pub fn remove_file(path: &Path) -> Result<()> {
    let root = rooted::current()?;
    let Some((dir, name)) = root.parent(path)? else {
        return Ok(());
    };
    match stat_entry(&dir, &name, path)? {
        None => return Ok(()),
        Some(st)
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR =>
        {
            bail!("cannot remove {}: it is a directory", path.display())
        }
        Some(_) => {}
    }
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_error(e, "cannot remove", path)),
    }
    sync_fd(&dir, path.parent().unwrap_or(path))
}

/// Removes an empty directory; one that is already gone is fine.
pub fn remove_dir(path: &Path) -> Result<()> {
    let root = rooted::current()?;
    let Some((dir, name)) = root.parent(path)? else {
        return Ok(());
    };
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::RemoveDir) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io_error(e, "cannot remove directory", path)),
    }
    sync_fd(&dir, path.parent().unwrap_or(path))
}

/// Removes a directory and everything in it; one that is gone is fine.
/// Links inside are removed, never followed.
pub fn remove_tree(path: &Path) -> Result<()> {
    let root = rooted::current()?;
    let Some((dir, name)) = root.parent(path)? else {
        return Ok(());
    };
    remove_all_at(&dir, &name, path).with_context(|| format!("cannot delete {}", path.display()))
}

fn remove_all_at(dir: &impl AsFd, name: &OsStr, path: &Path) -> Result<()> {
    let Some(st) = stat_entry(dir, name, path)? else {
        return Ok(());
    };
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
        let sub = openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(e, "cannot open", path))?;
        for child in names(&sub, path)? {
            remove_all_at(&sub, &child, &path.join(&child))?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)
            .map_err(|e| io_error(e, "cannot remove directory", path))
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_error(e, "cannot remove", path))
    }
}

/// Removes the empty directories of a tree, bottom up; anything holding a
/// file stays. Best effort.
pub fn remove_empty_tree(path: &Path) {
    let Ok(names) = list_dir(path) else {
        return;
    };
    for name in names {
        let child = path.join(&name);
        let is_dir = rooted::current()
            .ok()
            .and_then(|r| r.parent(&child).ok().flatten())
            .and_then(|(d, n)| fstatat(&d, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok())
            .is_some_and(|st| {
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
            });
        if is_dir {
            remove_empty_tree(&child);
        }
    }
    if let Ok(root) = rooted::current() {
        if let Ok(Some((dir, name))) = root.parent(path) {
            let _ = unlinkat(&dir, name.as_os_str(), UnlinkatFlags::RemoveDir);
        }
    }
}

fn sync_fd(dir: &impl AsFd, path: &Path) -> Result<()> {
    nix::unistd::fsync(dir.as_fd())
        .or_else(|e| match e {
            // A directory opened for search only (an unprivileged run) or a
            // filesystem without directory fsync.
            Errno::EBADF | Errno::EINVAL => Ok(()),
            e => Err(e),
        })
        .map_err(|e| io_error(e, "cannot fsync directory", path))
}

fn tmp_name(path: &Path) -> String {
    format!("temporary file for {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    /// A FIFO, a device, a link or an oversized file where a managed file
    /// belongs is an error naming it, reached at once (never blocking, never
    /// reading without end), and is never replaced.
    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let link = dir.path().join("link");
        fs::write(dir.path().join("target"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; MAX_FILE as usize + 1]).unwrap();
        let started = std::time::Instant::now();
        for (path, needle) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (link.as_path(), "symbolic link"),
            (big.as_path(), "larger than"),
        ] {
            let e = format!("{:#}", observe(path).unwrap_err());
            assert!(
                e.contains(needle) && e.contains(&*path.to_string_lossy()),
                "{e}"
            );
            if path != Path::new("/dev/zero") && path != big {
                let e = format!("{:#}", write_atomic(path, b"new", 0o644, None).unwrap_err());
                assert!(e.contains(needle), "{e}");
            }
        }
        assert_eq!(fs::read_link(&link).unwrap(), dir.path().join("target"));
        assert_eq!(fs::read(dir.path().join("target")).unwrap(), b"x");
        // Operator inputs: links followed, special files refused.
        assert_eq!(read_input(&link, 10).unwrap(), b"x");
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let e = read_input(path, 10).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        assert!(read_input(&big, 10)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }

    #[test]
    fn sweep_removes_only_temporary_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".nodeprep-abc123"), "torn").unwrap();
        fs::write(dir.path().join("consul.conf"), "keep").unwrap();
        fs::create_dir(dir.path().join(".nodeprep-dir")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(".nodeprep-link")).unwrap();
        let swept = sweep_temp(dir.path(), true).unwrap();
        assert_eq!(swept.removed, vec![dir.path().join(".nodeprep-abc123")]);
        // Directories are found, links to them are not.
        assert_eq!(swept.subdirs, vec![dir.path().join(".nodeprep-dir")]);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".nodeprep-dir", ".nodeprep-link", "consul.conf"]);
    }
}

#[cfg(test)]
mod dir_tests {
    use super::*;
    use std::fs;

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
