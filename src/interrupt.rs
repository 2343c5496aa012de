//! SIGTERM, SIGINT and SIGHUP during `apply` and `remove`.
//!
//! What nodeprep does: the action under way (one atomic file write, one
//! API call) is finished, nothing further is started, the report lists what
//! was done and what was not, and the run exits 1 saying "interrupted". The
//! record already holds every change made, so the next `apply` converges and
//! `remove` undoes. A second signal ends the process at once with exit 1:
//! every file write is atomic, so even then no file is torn.
//!
//! Other commands only read and keep the default handling (they die).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

struct Flags {
    seen: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Starts catching SIGTERM, SIGINT and SIGHUP for the rest of the process.
pub fn watch() -> Result<()> {
    let flags = FLAGS.get_or_init(|| Flags {
        seen: Arc::new(AtomicBool::new(false)),
        which: Arc::new(AtomicUsize::new(0)),
    });
    for sig in [SIGTERM, SIGINT, SIGHUP] {
        // Registered first, so it runs before the flag is set: only a
        // second signal ends the process.
        signal_hook::flag::register_conditional_shutdown(sig, 1, flags.seen.clone())
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(sig, flags.seen.clone())
            .context("cannot install a signal handler")?;
        signal_hook::flag::register_usize(sig, flags.which.clone(), sig as usize)
            .context("cannot install a signal handler")?;
    }
    Ok(())
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<&'static str> {
    let flags = FLAGS.get()?;
    if !flags.seen.load(Ordering::SeqCst) {
        return None;
    }
    Some(match flags.which.load(Ordering::SeqCst) as i32 {
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "SIGTERM",
    })
}
