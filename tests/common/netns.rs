//! A private network namespace for a test (`ip netns add`): whatever runs in
//! it binds and answers on the namespace's own `lo`, and the host's network
//! is never touched. Include from a test file:
//!
//! ```ignore
//! mod common;
//! #[path = "common/netns.rs"]
//! mod netns;
//!
//! #[test]
//! fn something() {
//!     if let Err(why) = netns::prerequisites(&["dnsmasq"]) {
//!         return common::prerequisite_missing(&why);
//!     }
//!     // lo up, with the link address on it (the host kernel has no dummy type)
//!     let ns = netns::Netns::with_lo_addresses("dns", &["169.254.1.1/32"]);
//!     let _server = ns.spawn(&["dnsmasq", "-k", ...]); // killed on drop
//!     let answer = ns.run_ok(&["dig", "@169.254.1.1", ...]);
//! }   // the namespace is deleted here
//! ```
//!
//! Needs root and iproute2's `ip` ([`prerequisites`] says which is missing).
//! Depends on std and nix (a dev-dependency).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Root and each tool (with `ip`) on PATH, or why not, for
/// `common::prerequisite_missing`.
pub fn prerequisites(tools: &[&str]) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root for ip netns".into());
    }
    for tool in std::iter::once(&"ip").chain(tools) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("{tool} not installed (tests/setup.sh installs it)"));
        }
    }
    Ok(())
}

/// A network namespace with `lo` up, deleted on drop (with it go its
/// addresses and sockets; processes started in it are the caller's to end,
/// see [`Background`]).
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace named `nodeprep-<tag>-<pid>-<n>`: unique among tests
    /// running at once, in this process and others. A leftover of that name
    /// (a killed earlier run with the same pid) is deleted first.
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(1);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("nodeprep-{tag}-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.run_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// [`Netns::new`], then each address (`a.b.c.d/len`) added to `lo`.
    pub fn with_lo_addresses(tag: &str, addresses: &[&str]) -> Netns {
        let ns = Netns::new(tag);
        for address in addresses {
            ns.add_lo_address(address);
        }
        ns
    }

    /// Adds `address` (`a.b.c.d/len`) to the namespace's `lo`, as an
    /// address that appears later (a link coming up after a server started).
    pub fn add_lo_address(&self, address: &str) {
        self.run_ok(&["ip", "addr", "add", address, "dev", "lo"]);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> ARGS`, not started: add arguments, pipes or
    /// environment, then run it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs ARGS in the namespace and returns its stdout; panics with its
    /// stdout and stderr unless it exits 0.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} in netns {} ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts ARGS in the namespace in the background, stdin closed, stdout
    /// and stderr piped (the caller may take and read them); killed when the
    /// returned value drops.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?} in netns {}: {e}", self.name));
        Background { child }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A process started by [`Netns::spawn`], killed (and reaped) on drop.
pub struct Background {
    pub child: Child,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
