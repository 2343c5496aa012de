//! TEST STAND-INS for nodeprep's container and probe tests: `consul-standin`
//! and `registrator-standin`. They are NOT Consul and NOT registrator. Each
//! one checks that it was started the way nodeprep is meant to start the real
//! program (command line, bind mounts, config files), prints why and exits
//! non-zero when it was not, and otherwise prints one `ready:` line and runs
//! until SIGTERM or SIGINT, then exits 0 at once. Where nodeprep's
//! correctness depends on it they behave like the real programs: the consul
//! stand-in serves a one-node catalog over Consul's HTTP API and DNS (see
//! [`consul`]); the registrator stand-in registers the published ports of
//! the engine's containers with it and deregisters them when they die (see
//! [`registrator`]). `workload-standin` is an idle container for those
//! tests.
//!
//! They are static executables packed alone into images by
//! `tests/docker/build-standins.sh` (`docker import`), so they run as PID 1 of
//! their container: the kernel drops SIGTERM for PID 1 unless a handler is
//! installed, which [`signals::install`] does. They also run as plain
//! processes (`NODEPREP_STANDINS_BUILD_ONLY=1 tests/docker/build-standins.sh`
//! builds them), e.g. inside a network namespace.
//!
//! Output conventions (tests match on them):
//! - every line starts with the program's [`Banner`], which says "stand-in";
//! - success: one line containing `ready:` on stdout, printed only once every
//!   listener is bound;
//! - failure: one line containing `error:` on stderr, then exit 1 (the
//!   environment is wrong: config, mounts, an address that cannot be bound)
//!   or 2 (the command line is wrong).
//!
//! Layout: each program is a library module ([`consul`], [`registrator`])
//! with a pure-ish `parse` of its arguments, a `prepare` step that checks the
//! environment and returns the state the program serves, and a `serve` step
//! that binds its listeners and starts their threads before
//! [`signals::wait`]; the process exits on SIGTERM whatever they are doing.

pub mod consul;
pub mod registrator;

use std::fmt;

/// How a stand-in names itself at the start of every line it prints.
#[derive(Clone, Copy)]
pub struct Banner(pub &'static str);

impl fmt::Display for Banner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A reason to exit: the code and the message printed on stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    /// The environment is wrong (config file, mount, socket): exit 1.
    pub fn env(message: impl Into<String>) -> Exit {
        Exit {
            code: 1,
            message: message.into(),
        }
    }

    /// The command line is wrong: exit 2.
    pub fn usage(message: impl Into<String>) -> Exit {
        Exit {
            code: 2,
            message: message.into(),
        }
    }
}

/// Runs a stand-in's body and turns its outcome into an exit code, printing
/// the error line on failure.
pub fn main_with(banner: Banner, body: impl FnOnce() -> Result<(), Exit>) -> ! {
    signals::install();
    match body() {
        Ok(()) => {
            println!("{banner}: got SIGTERM/SIGINT, exiting 0");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{banner}: error: {}", e.message);
            std::process::exit(e.code)
        }
    }
}

/// SIGTERM/SIGINT handling without libc: a flag set by a tiny handler
/// installed through glibc's `signal()` (BSD semantics: the handler stays
/// installed, interrupted syscalls restart).
pub mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    const SIG_ERR: usize = usize::MAX;

    static TERMINATED: AtomicBool = AtomicBool::new(false);

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(_signum: i32) {
        // Only an atomic store: async-signal-safe.
        TERMINATED.store(true, Ordering::SeqCst);
    }

    /// Installs the handler for SIGTERM and SIGINT. Without it a stand-in
    /// running as PID 1 would ignore `docker stop`'s SIGTERM and be killed
    /// after the 10 s grace period.
    pub fn install() {
        for sig in [SIGTERM, SIGINT] {
            // SAFETY: `on_signal` is async-signal-safe (one atomic store).
            let previous = unsafe { signal(sig, on_signal) };
            assert_ne!(previous, SIG_ERR, "signal({sig}) failed");
        }
    }

    /// True once SIGTERM or SIGINT arrived.
    pub fn terminated() -> bool {
        TERMINATED.load(Ordering::SeqCst)
    }

    /// Blocks until SIGTERM or SIGINT. Polls every 20 ms: `std::thread::sleep`
    /// resumes after a signal, so a blocking wait would not return earlier.
    pub fn wait() {
        while !terminated() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Splits `-name=value` / `--name=value` / `-name` into (`name`, value).
/// Returns None for an argument that is not a flag (`-` alone, `--`, or no
/// leading dash).
pub fn split_flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() || body.starts_with('-') {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_like_go_flag() {
        assert_eq!(split_flag("-ip"), Some(("ip", None)));
        assert_eq!(split_flag("--ip=1.2.3.4"), Some(("ip", Some("1.2.3.4"))));
        assert_eq!(
            split_flag("-config-dir=/a=b"),
            Some(("config-dir", Some("/a=b")))
        );
        assert_eq!(split_flag("consul://x"), None);
        assert_eq!(split_flag("--"), None);
        assert_eq!(split_flag("-"), None);
        assert_eq!(split_flag("---x"), None);
    }
}
