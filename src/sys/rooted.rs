//! Rooted path resolution: every path nodeprep reads or writes on the host
//! is resolved by the kernel inside one directory, the root (`/` live, DIR
//! with `--root`), through `openat2(RESOLVE_IN_ROOT)`.
//!
//! Inside the root a symbolic link is followed as it would be in a chroot of
//! DIR: an absolute target such as `/srv/etc` means `DIR/srv/etc`, and `..`
//! never climbs above DIR. An image tree may hold absolute links meant for
//! the image's own filesystem; they never reach the building host. Magic
//! links (`/proc/self/...`) are refused. Resolution failures (a loop, a file
//! where a directory is needed) are errors that name the path.
//!
//! Only the directories above a managed file are resolved this way; the
//! file's own name is handled by the caller with `*at` calls that never
//! follow it (see `sys::files`).
//!
//! While a run only reads (planning, and the sweep of temporary files before
//! the first change) each directory is resolved once and its descriptor
//! reused ([`reuse_dirs`]); from the first change on every call resolves
//! again ([`forget_dirs`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// A directory every path of the run is resolved inside.
#[derive(Debug)]
pub struct Root {
    dir: PathBuf,
    fd: OwnedFd,
}

static CURRENT: RwLock<Option<Arc<Root>>> = RwLock::new(None);

/// Confines every later file operation of the process to `dir` (`/` for the
/// live host). Called once per run, before anything is read.
pub fn confine(dir: &Path) -> Result<()> {
    let root = Arc::new(Root::open(dir)?);
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(root);
    Ok(())
}

/// The root of this run: the one given to [`confine`], else `/`.
pub fn current() -> Result<Arc<Root>> {
    if let Some(root) = CURRENT.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(root.clone());
    }
    let root = Arc::new(Root::open(Path::new("/"))?);
    let mut slot = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    Ok(slot.get_or_insert(root).clone())
}

/// A directory resolved inside the root, for `*at` calls. Shared: while
/// directories are reused, every caller asking for the same directory gets
/// the same descriptor.
pub type DirFd = Rc<OwnedFd>;

thread_local! {
    /// The directories resolved so far in this thread's read-only phase, by
    /// path as the run reaches them (`None`: it does not exist). Per thread,
    /// so that nothing but the run that asked for it sees it.
    static REUSED: RefCell<Option<BTreeMap<PathBuf, Option<DirFd>>>> = const { RefCell::new(None) };
}

/// Reuse of resolved directories, until [`forget_dirs`] or the value is
/// dropped.
pub struct Reuse(());

/// From now on, in this thread, each directory is resolved once and its
/// descriptor (or its absence) reused.
///
/// Only for a phase that changes no directory: nodeprep's own changes
/// (creating or removing a directory) would make a kept answer wrong, and so
/// would other programs' when the phase is long (a service restarted by the
/// run recreating its runtime directory). A run reuses directories while it
/// plans and sweeps; the engine calls [`forget_dirs`] before the first
/// change. A kept descriptor names the directory that was inside the root
/// when it was resolved, as any descriptor does between its `openat2` and
/// its use.
pub fn reuse_dirs() -> Reuse {
    REUSED.with(|r| *r.borrow_mut() = Some(BTreeMap::new()));
    Reuse(())
}

/// Ends [`reuse_dirs`]: every later call resolves its directory again.
pub fn forget_dirs() {
    REUSED.with(|r| r.borrow_mut().take());
}

impl Drop for Reuse {
    fn drop(&mut self) {
        forget_dirs();
    }
}

const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_IN_ROOT.union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

impl Root {
    /// Opens `dir` as a root. The root itself is the operator's choice and
    /// may be reached through links; nothing below it is resolved outside it.
    pub fn open(dir: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open the root directory {}", dir.display()))?;
        Ok(Root {
            dir: dir.to_path_buf(),
            fd,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True for the live host's root, `/`.
    pub fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// `real` as a path relative to the root. A path outside the root is an
    /// error: nothing is ever read or written there.
    pub fn relative<'a>(&self, real: &'a Path) -> Result<&'a Path> {
        let rel = real.strip_prefix(&self.dir).map_err(|_| {
            anyhow!(
                "{} lies outside the root {}: refusing to touch it",
                real.display(),
                self.dir.display()
            )
        })?;
        if rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            bail!("{} may not contain '..'", real.display());
        }
        Ok(rel)
    }

    /// Opens directory `real`, resolved inside the root (links included).
    /// `None` when it does not exist (a link to a missing place included).
    pub fn open_dir(&self, real: &Path) -> Result<Option<DirFd>> {
        let rel = self.relative(real)?;
        self.open_dir_rel(rel, real)
    }

    /// [`Self::resolve`], or what it answered before while directories are
    /// reused ([`reuse_dirs`]). Errors are not kept: they are found again.
    fn open_dir_rel(&self, rel: &Path, real: &Path) -> Result<Option<DirFd>> {
        let key = self.dir.join(rel);
        let kept = REUSED.with(|r| r.borrow().as_ref().and_then(|m| m.get(&key).cloned()));
        if let Some(kept) = kept {
            return Ok(kept);
        }
        let fd = self.resolve(rel, real)?.map(Rc::new);
        REUSED.with(|r| {
            if let Some(m) = r.borrow_mut().as_mut() {
                m.insert(key, fd.clone());
            }
        });
        Ok(fd)
    }

    fn resolve(&self, rel: &Path, real: &Path) -> Result<Option<OwnedFd>> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        // The kernel may ask for a retry when a rename races with `..`.
        for _ in 0..16 {
            let how = OpenHow::new().flags(flags).resolve(RESOLVE);
            match openat2(&self.fd, rel, how) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::EAGAIN) => continue,
                // A directory we may search but not list (an unprivileged
                // run): still good as the base of *at calls.
                Err(Errno::EACCES) if !flags.contains(OFlag::O_PATH) => {
                    flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                }
                Err(e) => return Err(self.resolve_error(e, real)),
            }
        }
        Err(self.resolve_error(Errno::EAGAIN, real))
    }

    /// The directory holding `real` (resolved inside the root) and `real`'s
    /// own name, which the caller must never follow. `None` when that
    /// directory does not exist.
    pub fn parent(&self, real: &Path) -> Result<Option<(DirFd, OsString)>> {
        let rel = self.relative(real)?;
        let name = match rel.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => bail!("{} names no file inside the root", real.display()),
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent_real = real.parent().unwrap_or(real);
        Ok(self.open_dir_rel(parent, parent_real)?.map(|fd| (fd, name)))
    }

    fn resolve_error(&self, e: Errno, real: &Path) -> anyhow::Error {
        let root = self.dir.display();
        let path = real.display();
        match e {
            Errno::ENOTDIR => {
                anyhow!("cannot resolve {path}: a part of it is not a directory")
            }
            Errno::ELOOP => anyhow!(
                "cannot resolve {path} inside {root}: a symbolic link loops or cannot be followed there"
            ),
            Errno::EXDEV | Errno::EAGAIN => {
                anyhow!("cannot resolve {path} inside {root}: it leads out of it")
            }
            Errno::ENOSYS => anyhow!(
                "cannot resolve {path}: the kernel lacks openat2 (Linux 5.6 or later is needed)"
            ),
            e => anyhow!("cannot resolve {path} inside {root}: {}", e.desc()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_resolve_inside_the_root_and_never_out_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (root_dir, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(root_dir.join("srv/conf")).unwrap();
        std::fs::create_dir_all(outside.join("conf")).unwrap();
        std::fs::create_dir_all(root_dir.join("etc")).unwrap();
        // An absolute link names the tree's own /srv/conf, not the host's.
        symlink("/srv/conf", root_dir.join("etc/abs")).unwrap();
        // A relative link climbing above the root stays at the root.
        symlink("../../../../../../srv/conf", root_dir.join("etc/rel")).unwrap();
        // A link to the outside directory's absolute path names a path
        // inside the tree that does not exist.
        symlink(outside.join("conf"), root_dir.join("etc/out")).unwrap();
        symlink("loop", root_dir.join("etc/loop")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        let ino = |fd: DirFd| nix::sys::stat::fstat(&fd).unwrap().st_ino;
        use std::os::unix::fs::MetadataExt;
        let want = std::fs::metadata(root_dir.join("srv/conf")).unwrap().ino();
        for link in ["etc/abs", "etc/rel"] {
            let fd = root.open_dir(&root_dir.join(link)).unwrap().unwrap();
            assert_eq!(ino(fd), want, "{link}");
        }
        assert!(root.open_dir(&root_dir.join("etc/out")).unwrap().is_none());
        let e = root.open_dir(&root_dir.join("etc/loop")).unwrap_err();
        assert!(format!("{e:#}").contains("etc/loop"), "{e:#}");
        let e = root.open_dir(&outside).unwrap_err();
        assert!(format!("{e:#}").contains("outside the root"), "{e:#}");
        let (_, name) = root
            .parent(&root_dir.join("etc/abs/file"))
            .unwrap()
            .unwrap();
        assert_eq!(name, "file");
    }

    /// While directories are reused, a directory (or its absence) is
    /// resolved once; once forgotten, each call resolves again and sees what
    /// changed in between.
    #[test]
    fn directories_are_reused_until_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let reuse = reuse_dirs();
        let first = root.open_dir(&a).unwrap().unwrap();
        let again = root.parent(&a.join("file")).unwrap().unwrap().0;
        assert!(Rc::ptr_eq(&first, &again));
        assert!(root.open_dir(&b).unwrap().is_none());
        std::fs::create_dir(&b).unwrap();
        assert!(root.open_dir(&b).unwrap().is_none(), "absence kept");
        drop(reuse);
        assert!(root.open_dir(&b).unwrap().is_some());
        let fresh = root.open_dir(&a).unwrap().unwrap();
        assert!(!Rc::ptr_eq(&first, &fresh));
    }
}
