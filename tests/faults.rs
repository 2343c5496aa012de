//! The fault-injection suite (not a unit test harness: it prints its counts
//! like the benchmarks print figures, and fails when any case fails).
//!
//! Faults, against the real binary on a `--root` tree that starts with
//! foreign files (a hand-written dnsmasq drop-in, foreign lines in
//! /etc/environment, a foreign file in the agent's config dir):
//! - SIGKILL at random moments of `apply` and `remove`, and exactly at every
//!   rename and every fsync (strace `inject=...:signal=KILL`);
//! - ENOSPC and EROFS injected at every write, rename, mkdir and unlink
//!   (strace `inject=...:error=`), and for real: a small full tmpfs, a
//!   read-only bind mount of the tree or of one directory (as root, in a
//!   private mount namespace);
//! - links to outside the tree (absolute and relative), FIFOs and devices in
//!   every managed position;
//! - concurrent applies;
//! - a fuzzer over the configuration parser and the /etc/environment reader
//!   and merge (proptest).
//!
//! After each fault: nodeprep did not abort and did not hang (every run is
//! bounded), no managed file is torn (each holds its content before or
//! after, and kept copies are whole), nothing outside the tree changed,
//! and then `apply` converges, `check` is clean, no temporary file is left,
//! and `remove` gives back exactly the tree it started from (nothing lost).
//!
//! `cargo test --test faults` runs it; `NODEPREP_FAULTS_RANDOM` sets the
//! number of random kills, `NODEPREP_FAULTS_FUZZ` the fuzz cases.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PropConfig, TestRunner};

const BIN: &str = env!("CARGO_BIN_EXE_nodeprep");
const LIMIT: Duration = Duration::from_secs(20);

const FILES: &[&str] = &[
    "/etc/systemd/network/10-dummy0.netdev",
    "/etc/systemd/network/10-dummy0.network",
    "/etc/dnsmasq.d/consul.conf",
    "/etc/consul.d/interfaces.json",
    "/etc/consul.d/agent.json",
    "/etc/environment",
];

const DIRS: &[&str] = &[
    "/etc",
    "/etc/systemd/network",
    "/etc/dnsmasq.d",
    "/etc/consul.d",
    "/var/lib",
    "/var/lib/nodeprep",
];

type Tree = Vec<(PathBuf, String, Vec<u8>)>;

/// Every entry under `dir`: kind (with mode), and a regular file's bytes;
/// FIFOs and devices are never opened.
fn listing(dir: &Path) -> Tree {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let t = m.file_type();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let mode = m.mode() & 0o7777;
            let (kind, content) = if t.is_dir() {
                stack.push(p.clone());
                (format!("dir {mode:o}"), Vec::new())
            } else if t.is_symlink() {
                (
                    format!("link {}", std::fs::read_link(&p).unwrap().display()),
                    Vec::new(),
                )
            } else if t.is_file() {
                (
                    format!("file {mode:o}"),
                    std::fs::read(&p).unwrap_or_default(),
                )
            } else {
                ("special".to_string(), Vec::new())
            };
            out.push((rel, kind, content));
        }
    }
    out.sort();
    out
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs a command to its end or kills it past `LIMIT` (then it is a hang).
fn bounded(mut cmd: Command) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return Ok(Outcome {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                took: started.elapsed(),
            });
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung for more than {LIMIT:?}: {cmd:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One scenario's world: a directory holding the tree (`root`), its config
/// and an `outside` directory that links point at.
struct World {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl World {
    fn new() -> World {
        World::in_dir(None)
    }

    fn in_dir(parent: Option<&Path>) -> World {
        let tmp = match parent {
            Some(p) => tempfile::tempdir_in(p).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let base = tmp.path().to_path_buf();
        let w = World { _tmp: tmp, base };
        std::fs::create_dir(w.root()).unwrap();
        std::fs::write(w.config(), "[consul]\nbind_addr = \"192.0.2.10\"\n").unwrap();
        for f in FILES {
            let p = w.base.join("outside").join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "outside\n").unwrap();
        }
        w.foreign();
        w
    }

    fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    fn config(&self) -> PathBuf {
        self.base.join("nodeprep.toml")
    }

    fn path(&self, host: &str) -> PathBuf {
        self.root().join(host.trim_start_matches('/'))
    }

    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    /// The tree an image builder hands over.
    fn foreign(&self) {
        std::fs::create_dir_all(self.path("/var/lib")).unwrap();
        std::fs::create_dir_all(self.path("/etc/dnsmasq.d")).unwrap();
        std::fs::create_dir_all(self.path("/etc/consul.d")).unwrap();
        std::fs::write(
            self.path("/etc/environment"),
            b"# from the image\r\nPATH=\"/usr/local/bin:/usr/bin\"\nA=x\\\nCONSUL_HTTP_ADDR=127.0.0.1:8500\nLANG=C.UTF-8",
        )
        .unwrap();
        let conf = self.path("/etc/dnsmasq.d/consul.conf");
        std::fs::write(&conf, "# hand-written\nserver=/consul/10.0.0.1#8600\n").unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            self.path("/etc/consul.d/other.json"),
            "{\"log_level\": \"warn\"}\n",
        )
        .unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(self.root())
            .arg("--config")
            .arg(self.config())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<Outcome, String> {
        bounded(self.command(args))
    }

    /// Everything in the world but the tree (the config, the outside).
    fn around(&self) -> Tree {
        listing(&self.base)
            .into_iter()
            .filter(|(p, _, _)| !p.starts_with("root"))
            .collect()
    }
}

/// What a correct run may leave in each managed file: its content before
/// (or absent) and after apply.
struct Expect {
    before: BTreeMap<String, Option<Vec<u8>>>,
    after: BTreeMap<String, Vec<u8>>,
    tree: Tree,
}

fn expectations() -> Expect {
    let w = World::new();
    let read = |w: &World| {
        FILES
            .iter()
            .map(|f| (f.to_string(), std::fs::read(w.path(f)).ok()))
            .collect::<BTreeMap<_, _>>()
    };
    let before = read(&w);
    let tree = listing(&w.root());
    let apply = w.run(&["apply"]).unwrap();
    assert_eq!(apply.code(), Some(0), "reference apply: {}", apply.stderr);
    let after = read(&w).into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    Expect {
        before,
        after,
        tree,
    }
}

/// Checks the invariants after a faulted run, then that apply converges,
/// check is clean, no temporary file stays, and remove gives back the tree
/// the world started from.
fn verify(
    w: &World,
    ex: &Expect,
    around: &Tree,
    run: &Result<Outcome, String>,
) -> Result<(), String> {
    let run = run.as_ref().map_err(|e| e.clone())?;
    if run.status.signal().is_some_and(|s| s != libc_sigkill()) || run.code() == Some(134) {
        return Err(format!(
            "nodeprep aborted ({:?}): {}",
            run.status, run.stderr
        ));
    }
    if let Some(code) = run.code() {
        // 78: an injected error on reading the configuration.
        if ![0, 1, 2, 78].contains(&code) {
            return Err(format!("exit {code}: {}", run.stderr));
        }
    }
    for f in FILES {
        let p = w.path(f);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let now = std::fs::read(&p).unwrap_or_default();
        let ok = ex.before[*f].as_deref() == Some(now.as_slice()) || ex.after[*f] == now;
        if !ok {
            return Err(format!("{f} is torn: {:?}", String::from_utf8_lossy(&now)));
        }
    }
    for (kind, dir) in [
        ("originals", "var/lib/nodeprep/originals"),
        ("edited", "var/lib/nodeprep/edited"),
    ] {
        for (p, k, content) in listing(&w.root().join(dir)) {
            if !k.starts_with("file") || p.to_string_lossy().contains(".nodeprep-") {
                continue;
            }
            let host = format!("/{}", p.display());
            if kind == "originals"
                && ex.before.get(&host).and_then(|b| b.as_deref()) != Some(content.as_slice())
            {
                return Err(format!("the kept original of {host} is not the original"));
            }
        }
    }
    let record = w.path("/var/lib/nodeprep/state.json");
    if let Ok(text) = std::fs::read(&record) {
        serde_json::from_slice::<serde_json::Value>(&text)
            .map_err(|e| format!("state.json is torn: {e}"))?;
    }
    if w.around() != *around {
        return Err("something outside the tree changed".into());
    }
    converge_and_undo(w, ex)
}

fn libc_sigkill() -> i32 {
    9
}

fn converge_and_undo(w: &World, ex: &Expect) -> Result<(), String> {
    let apply = w.run(&["--format", "json", "apply"])?;
    if apply.code() != Some(0) {
        return Err(format!(
            "apply after the fault: exit {:?}: {}{}",
            apply.code(),
            apply.stdout,
            apply.stderr
        ));
    }
    let check = w.run(&["check", "--no-probes"])?;
    if check.code() != Some(0) {
        return Err(format!("check after apply: {}", check.stdout));
    }
    for f in FILES {
        if std::fs::read(w.path(f)).ok().as_ref() != Some(&ex.after[*f]) {
            return Err(format!("{f} did not converge"));
        }
    }
    if let Some((p, _, _)) = listing(&w.root()).into_iter().find(|(p, _, _)| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".nodeprep-"))
    }) {
        return Err(format!("temporary file left after apply: {}", p.display()));
    }
    let remove = w.run(&["remove"])?;
    if remove.code() != Some(0) {
        return Err(format!("remove: {}{}", remove.stdout, remove.stderr));
    }
    let now = listing(&w.root());
    if now != ex.tree {
        let diff: Vec<_> = now
            .iter()
            .filter(|e| !ex.tree.contains(e))
            .map(|(p, k, _)| format!("+{} {k}", p.display()))
            .chain(
                ex.tree
                    .iter()
                    .filter(|e| !now.contains(e))
                    .map(|(p, k, _)| format!("-{} {k}", p.display())),
            )
            .collect();
        return Err(format!(
            "remove did not give back the tree: {}",
            diff.join(", ")
        ));
    }
    Ok(())
}

/// A group of cases and its failures.
struct Group {
    name: &'static str,
    cases: usize,
    failures: Vec<String>,
    started: Instant,
}

impl Group {
    fn new(name: &'static str) -> Group {
        Group {
            name,
            cases: 0,
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    fn case(&mut self, label: impl std::fmt::Display, result: Result<(), String>) {
        self.cases += 1;
        if let Err(e) = result {
            self.failures.push(format!("{}: {label}: {e}", self.name));
        }
    }

    fn done(self, all: &mut Vec<String>, total: &mut usize) {
        println!(
            "faults: {:<28} {:>5} cases, {} failures, {:.1} s",
            self.name,
            self.cases,
            self.failures.len(),
            self.started.elapsed().as_secs_f64()
        );
        for f in self.failures.iter().take(5) {
            println!("  {f}");
        }
        *total += self.cases;
        all.extend(self.failures);
    }
}

/// A world converged (for remove scenarios) or fresh (for apply).
fn world_for(cmd: &str) -> World {
    let w = World::new();
    if cmd == "remove" {
        let _ = w.run(&["apply"]);
    }
    w
}

fn random_kills(ex: &Expect, count: usize, g: &mut Group) {
    // How long a whole run takes, to spread the kills over it.
    let w = World::new();
    let took = w
        .run(&["apply"])
        .map(|o| o.took)
        .unwrap_or(Duration::from_millis(20));
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..count {
        let cmd = if i % 3 == 2 { "remove" } else { "apply" };
        let w = world_for(cmd);
        let around = w.around();
        let delay = Duration::from_micros(next() % (took.as_micros() as u64 * 12 / 10 + 1));
        let mut child = w
            .command(&[cmd])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let run = Ok(Outcome {
            status,
            stdout: String::new(),
            stderr: String::new(),
            took: delay,
        });
        g.case(
            format!("{cmd} killed after {delay:?}"),
            verify(&w, ex, &around, &run),
        );
    }
}

/// How many times a run calls each syscall of `set` (strace -c).
fn count_calls(cmd: &str, set: &str) -> BTreeMap<String, usize> {
    let w = world_for(cmd);
    let out_file = w.base.join("strace.out");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o"])
        .arg(&out_file)
        .arg("-e")
        .arg(format!("trace={set}"));
    c.arg(BIN)
        .arg("--root")
        .arg(w.root())
        .arg("--config")
        .arg(w.config())
        .arg(cmd);
    let _ = bounded(c);
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let call = if first.parse::<u32>().is_ok() {
            words.next().unwrap_or("")
        } else {
            first
        };
        let name = call.split('(').next().unwrap_or("");
        if set.split(',').any(|s| s == name) {
            *counts.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Runs `cmd` under strace with `inject` at the n-th call of each syscall.
fn injected(
    w: &World,
    cmd: &str,
    syscall: &str,
    inject: &str,
    n: usize,
) -> Result<Outcome, String> {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:{inject}:when={n}"))
        .arg(BIN)
        .arg("--root")
        .arg(w.root())
        .arg("--config")
        .arg(w.config())
        .args(["--format", "json", cmd]);
    bounded(c)
}

fn strace_kills(ex: &Expect, g: &mut Group) {
    let kill_sets = "rename,renameat,renameat2,fsync,fdatasync";
    for cmd in ["apply", "remove"] {
        for (syscall, n) in count_calls(cmd, kill_sets) {
            for k in 1..=n {
                let w = world_for(cmd);
                let around = w.around();
                let run = injected(&w, cmd, &syscall, "signal=KILL", k);
                g.case(
                    format!("{cmd}: SIGKILL at {syscall} #{k}"),
                    verify(&w, ex, &around, &run),
                );
            }
        }
    }
}

fn strace_errors(ex: &Expect, g_err: &mut Group) {
    let err_sets = [
        ("write", "error=ENOSPC"),
        ("renameat", "error=EROFS"),
        ("renameat", "error=ENOSPC"),
        ("openat", "error=ENOSPC"),
        ("mkdirat", "error=EROFS"),
        ("unlinkat", "error=EROFS"),
        ("fsync", "error=EIO"),
    ];
    for cmd in ["apply", "remove"] {
        let counts = count_calls(cmd, "write,renameat,openat,mkdirat,unlinkat,fsync");
        for (syscall, inject) in err_sets {
            let n = counts.get(syscall).copied().unwrap_or(0);
            // Every call for the rarer ones, a spread for the many writes
            // and opens (most of them reads of libraries at start).
            let step = (n / 12).max(1);
            for k in (1..=n).step_by(step) {
                let w = world_for(cmd);
                let around = w.around();
                let run = injected(&w, cmd, syscall, inject, k);
                let result = match &run {
                    Ok(o) if o.status.signal().is_some() => Err(format!(
                        "killed by signal {:?}: {}",
                        o.status.signal(),
                        o.stderr
                    )),
                    _ => verify(&w, ex, &around, &run),
                };
                g_err.case(format!("{cmd}: {inject} at {syscall} #{k}"), result);
            }
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Real ENOSPC and EROFS: the tree on a small tmpfs that is full, and
/// read-only bind mounts of the tree and of one directory in it. Root
/// only; the mounts live in this process's private mount namespace.
fn mount_faults(ex: &Expect, g: &mut Group) -> Result<(), String> {
    let scratch = tempfile::tempdir().unwrap();
    let fs = scratch.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=2m",
        "tmpfs",
        fs.to_str().unwrap(),
    ])?;
    for free_pages in [0u64, 1, 2, 3, 4, 6, 8, 12, 16] {
        let w = World::in_dir(Some(&fs));
        let around = w.around();
        let filler = w.base.join("filler");
        // Fill the tmpfs, then give back `free_pages` pages.
        let _ = std::fs::write(&filler, vec![0u8; 4 << 20]);
        let size = std::fs::metadata(&filler).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .and_then(|f| f.set_len(size.saturating_sub(free_pages * 4096)));
        let run = w.run(&["apply"]);
        let bad = matches!(&run, Ok(o) if o.code() != Some(0) && o.code() != Some(1));
        let _ = std::fs::remove_file(&filler);
        let around_now = w.around();
        let result = if bad {
            Err(format!("exit {:?}", run.as_ref().map(|o| o.code())))
        } else {
            verify(&w, ex, &around_now, &run).map(|()| drop(around))
        };
        g.case(format!("tmpfs full but {free_pages} pages"), result);
    }
    sh(&["umount", fs.to_str().unwrap()])?;
    for target in ["", "etc/consul.d", "var/lib"] {
        for cmd in ["apply", "remove"] {
            let w = world_for(cmd);
            if !target.is_empty() {
                std::fs::create_dir_all(w.root().join(target)).unwrap();
            }
            let around = w.around();
            let dir = w.root().join(target);
            let d = dir.to_str().unwrap();
            sh(&["mount", "--bind", d, d])?;
            sh(&["mount", "-o", "remount,ro,bind", d])?;
            let before = listing(&w.root());
            let run = w.run(&[cmd]);
            let ro_ok = match &run {
                Ok(o)
                    if o.code() == Some(1)
                        && (o.stdout.contains("Read-only") || o.stderr.contains("Read-only")) =>
                {
                    Ok(())
                }
                Ok(o) if target.is_empty() && cmd == "apply" => {
                    Err(format!("exit {:?}: {}", o.code(), o.stdout))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            let unchanged = if target.is_empty() && listing(&w.root()) != before {
                Err("the read-only tree changed".to_string())
            } else {
                Ok(())
            };
            sh(&["umount", d])?;
            let result = ro_ok
                .and(unchanged)
                .and_then(|()| verify(&w, ex, &around, &run));
            g.case(format!("{cmd} with /{target} read-only"), result);
        }
    }
    Ok(())
}

/// Links to outside (absolute, relative), FIFOs and devices in every
/// managed position: every command ends at once, nothing outside changes,
/// and once the obstacle is gone the tree converges and round-trips.
fn obstacles(ex: &Expect, g: &mut Group) {
    let root_user = nix::unistd::geteuid().is_root();
    let positions: Vec<&str> = FILES
        .iter()
        .chain(DIRS)
        .chain(&["/var/lib/nodeprep/state.json"])
        .copied()
        .collect();
    for pos in positions {
        for kind in ["absolute link", "relative link", "fifo", "device"] {
            if kind == "device" && !root_user {
                continue;
            }
            let is_dir = DIRS.contains(&pos);
            if is_dir
                && kind != "absolute link"
                && kind != "relative link"
                && pos != "/etc/consul.d"
            {
                continue;
            }
            let w = World::new();
            let at = w.path(pos);
            // Obstacles replace what was there: the round trip afterwards
            // starts from the tree as it is now.
            let _ = std::fs::remove_dir_all(&at);
            let _ = std::fs::remove_file(&at);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            let target = w.outside().join(pos.trim_start_matches('/'));
            let made = match kind {
                "absolute link" => symlink(&target, &at).map_err(|e| e.to_string()),
                "relative link" => symlink(
                    PathBuf::from("../".repeat(pos.matches('/').count() + 4))
                        .join(target.strip_prefix("/").unwrap()),
                    &at,
                )
                .map_err(|e| e.to_string()),
                "fifo" => nix::unistd::mkfifo(&at, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(|e| e.to_string()),
                _ => nix::sys::stat::mknod(
                    &at,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o666),
                    nix::sys::stat::makedev(1, 5),
                )
                .map_err(|e| e.to_string()),
            };
            let around = w.around();
            let mut result = made;
            for cmd in ["apply", "check", "remove"] {
                if result.is_err() {
                    break;
                }
                result = match w.run(&[cmd]) {
                    Ok(o) if [Some(0), Some(1), Some(2)].contains(&o.code()) => Ok(()),
                    Ok(o) => Err(format!("{cmd}: {:?}: {}", o.status, o.stderr)),
                    Err(e) => Err(e),
                };
            }
            if result.is_ok() && w.around() != around {
                result = Err("something outside the tree changed".into());
            }
            if result.is_ok() {
                for (p, k, _) in listing(&w.root()) {
                    if k.starts_with("link") || k == "special" {
                        let _ = std::fs::remove_file(w.root().join(p));
                    }
                }
                // From here the tree lacks what the obstacle replaced: it
                // must converge and be clean; the round trip's reference is
                // this tree, so only apply and check are asked.
                result = w.run(&["apply"]).and_then(|o| {
                    if o.code() == Some(0) {
                        Ok(())
                    } else {
                        Err(format!("apply after clearing: {}", o.stdout))
                    }
                });
                if result.is_ok() {
                    result = match w.run(&["check", "--no-probes"]) {
                        Ok(o) if o.code() == Some(0) => Ok(()),
                        Ok(o) => Err(format!("check after clearing: {}", o.stdout)),
                        Err(e) => Err(e),
                    };
                }
            }
            let _ = ex;
            g.case(format!("{kind} at {pos}"), result);
        }
    }
}

fn concurrent(ex: &Expect, rounds: usize, g: &mut Group) {
    for round in 0..rounds {
        let w = World::new();
        let around = w.around();
        let children: Vec<_> = (0..4)
            .map(|_| {
                w.command(&["apply"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut result = Ok(());
        let mut ok = 0;
        for c in children {
            let out = c.wait_with_output().unwrap();
            match out.status.code() {
                Some(0) => ok += 1,
                // The holder is named from the kernel's table of locks.
                Some(1)
                    if String::from_utf8_lossy(&out.stderr).contains("holds the lock")
                        && String::from_utf8_lossy(&out.stderr).contains("(pid ") => {}
                other => {
                    result = Err(format!(
                        "exit {other:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
            }
        }
        if result.is_ok() && ok == 0 {
            result = Err("no apply succeeded".into());
        }
        let dummy = Ok(Outcome {
            status: ExitStatus::from_raw(0),
            stdout: String::new(),
            stderr: String::new(),
            took: Duration::ZERO,
        });
        let result = result.and_then(|()| verify(&w, ex, &around, &dummy));
        g.case(format!("round {round}"), result);
    }
}

fn fuzz_config(count: u32, g: &mut Group) {
    let keys = [
        "[link]",
        "[consul]",
        "[dnsmasq]",
        "[environment.vars]",
        "[state]",
        "name = \"dummy0\"",
        "address = \"169.254.1.1/32\"",
        "listen = []",
        "listen = [\"0.0.0.0\"]",
        "dns_port = 53",
        "http_port = 8600",
        "bind_addr = \"192.0.2.10\"",
        "role = \"server\"",
        "bootstrap_expect = 3",
        "file = \"/etc/x/\"",
        "dir = \"/\"",
        "encrypt = \"c2hvcnQ=\"",
        "X = \"a#b\"",
        "a = [[[[1]]]]",
        "b = {c = {d = 1}}",
        "\"\u{1F600}\" = 1",
        "x = \"\\u00e9\"",
        "[[t]]",
        "= 3",
        "key = ",
        "[consul",
        "port = 70000",
        "k = 1979-05-27T07:32:00Z",
    ];
    let mut runner = TestRunner::new(PropConfig {
        cases: count,
        ..PropConfig::default()
    });
    let line = prop_oneof![
        (0..keys.len()).prop_map(move |i| keys[i].as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ];
    let file = prop::collection::vec(line, 0..12);
    for _ in 0..count {
        let lines = file.new_tree(&mut runner).unwrap().current();
        let bytes = lines.join(&b"\n"[..]);
        let result = std::panic::catch_unwind(|| match std::str::from_utf8(&bytes) {
            Ok(text) => match nodeprep::config::Config::parse(text, Path::new("/f.toml")) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let msg = format!("{e:#}");
                    if msg.contains("line ")
                        && (msg.contains("column ") || msg.contains("not set in the file"))
                    {
                        Ok(())
                    } else {
                        Err(format!("an error without line and column: {msg}"))
                    }
                }
            },
            Err(_) => Ok(()),
        })
        .unwrap_or_else(|_| Err("panicked".to_string()));
        g.case(format!("{:?}", String::from_utf8_lossy(&bytes)), result);
    }
}

fn fuzz_environment(count: u32, g: &mut Group) {
    let vars: BTreeMap<String, String> = [
        (
            "CONSUL_HTTP_ADDR".to_string(),
            "169.254.1.1:8500".to_string(),
        ),
        ("NODEPREP_X".to_string(), "a b".to_string()),
    ]
    .into();
    let pieces: &[&[u8]] = &[
        b"CONSUL_HTTP_ADDR=169.254.1.1:8500",
        b"CONSUL_HTTP_ADDR=x",
        b"export CONSUL_HTTP_ADDR=169.254.1.1:8500",
        b"NODEPREP_X=\"a b\"",
        b"NODEPREP_X",
        b"A=1",
        b"B=\\",
        b"#",
        b" ",
        b"\t",
        b"\r",
        b"\n",
        b"\0",
        b"\\",
        b"\"",
        b"'",
        b"=",
        b"export ",
        b"CONSUL_HTTP_ADDR",
    ];
    let mut runner = TestRunner::new(PropConfig {
        cases: count,
        ..PropConfig::default()
    });
    let piece = prop_oneof![
        (0..pieces.len()).prop_map(move |i| pieces[i].to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    let file = prop::collection::vec(piece, 0..24);
    for _ in 0..count {
        let bytes = file.new_tree(&mut runner).unwrap().current().concat();
        let result = std::panic::catch_unwind(|| {
            let merged = nodeprep::envfile::merge(&bytes, &vars);
            if nodeprep::envfile::merge(&merged, &vars) != merged {
                return Err("merge is not idempotent".to_string());
            }
            if !nodeprep::envfile::yields(&merged, &vars) {
                return Err("pam_env would not read the managed values".to_string());
            }
            let others = |b: &[u8]| {
                let mut e = nodeprep::envfile::pam_env(b).env();
                for k in vars.keys() {
                    e.remove(k.as_bytes());
                }
                e
            };
            if others(&merged) != others(&bytes) {
                return Err("the merge changed other variables".to_string());
            }
            let undone = nodeprep::envfile::unmerge(&merged, &vars, Some(&bytes));
            if others(&undone) != others(&bytes) {
                return Err("unmerge changed other variables".to_string());
            }
            Ok(())
        })
        .unwrap_or_else(|_| Err("panicked".to_string()));
        g.case(format!("{:?}", String::from_utf8_lossy(&bytes)), result);
    }
}

fn main() {
    let started = Instant::now();
    let env_count = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let required = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = nix::unistd::geteuid().is_root();
    // Mounts made by the suite stay in a mount namespace of its own.
    let private_mounts = root
        && nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
        && sh(&["mount", "--make-rprivate", "/"]).is_ok();
    let strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut failures = Vec::new();
    let mut total = 0;
    let mut missing = Vec::new();
    let ex = expectations();

    let mut g = Group::new("SIGKILL at random moments");
    random_kills(&ex, env_count("NODEPREP_FAULTS_RANDOM", 45), &mut g);
    g.done(&mut failures, &mut total);

    if strace {
        let mut g = Group::new("SIGKILL at rename and fsync");
        strace_kills(&ex, &mut g);
        g.done(&mut failures, &mut total);
        let mut g = Group::new("ENOSPC/EROFS/EIO injected");
        strace_errors(&ex, &mut g);
        g.done(&mut failures, &mut total);
    } else {
        missing.push("strace (apt-get install strace)");
    }

    if private_mounts {
        let mut g = Group::new("full tmpfs, read-only mounts");
        if let Err(e) = mount_faults(&ex, &mut g) {
            g.case("mount", Err(e));
        }
        g.done(&mut failures, &mut total);
    } else {
        missing.push("root and a private mount namespace (the tmpfs and read-only cases)");
    }

    let mut g = Group::new("links and special files");
    obstacles(&ex, &mut g);
    g.done(&mut failures, &mut total);

    let mut g = Group::new("concurrent applies");
    concurrent(&ex, 8, &mut g);
    g.done(&mut failures, &mut total);

    let fuzz = env_count("NODEPREP_FAULTS_FUZZ", 3000) as u32;
    let mut g = Group::new("fuzz: configuration parser");
    fuzz_config(fuzz, &mut g);
    g.done(&mut failures, &mut total);
    let mut g = Group::new("fuzz: /etc/environment");
    fuzz_environment(fuzz, &mut g);
    g.done(&mut failures, &mut total);

    for m in &missing {
        println!("faults: not run: {m}");
    }
    println!(
        "faults: {} cases in {:.1} s",
        total,
        started.elapsed().as_secs_f64()
    );
    println!(
        "faults: {} passed, {} failed",
        total - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        std::process::exit(1);
    }
    if required && !missing.is_empty() {
        eprintln!("prerequisite missing under CI=true: {}", missing.join("; "));
        std::process::exit(1);
    }
}
