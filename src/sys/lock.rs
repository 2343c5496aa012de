//! One `apply` at a time per host: an exclusive flock, taken without waiting.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Held for the life of the value; the kernel drops the lock when the process
/// exits, so a crashed apply never leaves a stale lock behind.
pub struct Lock {
    _held: Flock<File>,
}

/// Locks `path`, creating it if needed, and records our pid in it so that a
/// second apply can name the holder.
pub fn acquire(path: &Path) -> Result<Lock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the lock", dir.display()))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => held,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                "another process".to_string()
            } else {
                format!("pid {pid}")
            };
            bail!(
                "another nodeprep apply is running ({holder} holds {}): wait for it to finish",
                path.display()
            );
        }
        Err((_, e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
    };
    held.set_len(0)
        .and_then(|_| held.rewind())
        .and_then(|_| writeln!(held, "{}", std::process::id()))
        .with_context(|| format!("cannot record our pid in {}", path.display()))?;
    Ok(Lock { _held: held })
}
