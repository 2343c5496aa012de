//! One `apply` or `remove` at a time per host: an exclusive flock, taken
//! without waiting (a boot unit and cloud-init must never queue behind each
//! other). The kernel drops the lock when the process exits, so a crashed run
//! never leaves a stale lock behind.
//!
//! - Live: `/run/nodeprep.lock`, a regular file opened without following
//!   symlinks, holding the holder's pid for people.
//! - `--root DIR`: the directory DIR itself is locked, so that nothing is
//!   written into an image tree for the lock's sake.
//!
//! The holder named in the error comes from the kernel's own table of locks
//! (`/proc/locks`), which is right even in the instant before a holder has
//! written its pid.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// Held for the life of the value.
pub struct Lock {
    _held: Flock<File>,
}

/// Locks the regular file `path` (created 0644 if needed) and records our
/// pid in it.
pub fn acquire(path: &Path) -> Result<Lock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the lock", dir.display()))?;
    }
    // A file replaced between our open and our lock would be a different
    // lock from the one the next run takes: retry until the locked file is
    // the one at the path.
    for _ in 0..10 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // O_NONBLOCK: a FIFO planted at the path must not hang the open.
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open(path)
            .map_err(|e| match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                Errno::ELOOP => anyhow::anyhow!(
                    "lock file {} is a symbolic link: refusing to follow it (remove it)",
                    path.display()
                ),
                _ => anyhow::Error::new(e)
                    .context(format!("cannot open lock file {}", path.display())),
            })?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat lock file {}", path.display()))?;
        if !meta.file_type().is_file() {
            bail!(
                "lock file {} is not a regular file: remove it",
                path.display()
            );
        }
        let mut held = lock(file, path)?;
        let still_there = std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
        if !still_there {
            continue;
        }
        held.set_len(0)
            .and_then(|_| held.rewind())
            .and_then(|_| writeln!(held, "{}", std::process::id()))
            .with_context(|| format!("cannot record our pid in {}", path.display()))?;
        return Ok(Lock { _held: held });
    }
    bail!(
        "lock file {} keeps being replaced by someone else",
        path.display()
    )
}

/// Locks directory `dir` itself.
pub fn acquire_dir(dir: &Path) -> Result<Lock> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
        .open(dir)
        .with_context(|| format!("cannot open {} to lock it", dir.display()))?;
    Ok(Lock {
        _held: lock(file, dir)?,
    })
}

fn lock(mut file: File, path: &Path) -> Result<Flock<File>> {
    // A holder that is gone from the kernel's table by the time it is read
    // has just let go: try again rather than name no one.
    for _ in 0..5 {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(held),
            Err((f, Errno::EWOULDBLOCK)) => match holder(&f) {
                Some(pid) => bail!(
                    "another nodeprep apply or remove is running (pid {pid} holds the lock on {}): wait for it to finish",
                    path.display()
                ),
                None => file = f,
            },
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
    bail!(
        "another nodeprep apply or remove is running (another process holds the lock on {}): wait for it to finish",
        path.display()
    )
}

/// The pid holding a flock on `file`, from the kernel's `/proc/locks`.
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&table, meta.dev(), meta.ino())
}

/// Parses `/proc/locks` lines such as
/// `3: FLOCK  ADVISORY  WRITE 4242 00:1a:12345 0 EOF`
/// (device as hex major:minor, then the inode); waiters (`->`) are skipped.
fn holder_in(table: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == want => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn holder_is_read_from_the_kernel_table() {
        let dev = nix::sys::stat::makedev(0, 0x1a);
        let table = "1: POSIX  ADVISORY  WRITE 10 00:1a:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:1a:12345 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4343 00:1a:12345 0 EOF\n";
        assert_eq!(holder_in(table, dev, 12345), Some(4242));
        assert_eq!(holder_in(table, dev, 1), None);
    }

    #[test]
    fn a_second_lock_names_the_holder_and_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = acquire(&path).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts like another process would.
        let e = acquire(&path).err().unwrap();
        assert!(
            format!("{e:#}").contains(&format!("pid {}", std::process::id())),
            "{e:#}"
        );
        let _d = acquire_dir(dir.path()).unwrap();
        let e = acquire_dir(dir.path()).err().unwrap();
        assert!(format!("{e:#}").contains("pid "), "{e:#}");

        // A FIFO or a directory at the lock path: an error at once, never
        // a hang, and left as it is.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = acquire(&fifo).err().unwrap();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let e = acquire(dir.path()).err().unwrap();
        assert!(
            format!("{e:#}").contains(&*dir.path().to_string_lossy()),
            "{e:#}"
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
        let e = acquire(&link).err().unwrap();
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
        assert!(!dir.path().join("target").exists());
    }
}
