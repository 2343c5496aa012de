//! What the VM tiers share (`tests/vm_kernel.rs`, `tests/debian_vm.rs`):
//! booting a kernel under `qemu-system-x86_64 -accel tcg` with no network
//! card, the serial console captured line by line, a timeout, and the
//! guest's markers read back. Include from a test file:
//!
//! ```ignore
//! mod common;
//! #[path = "common/vm.rs"]
//! mod vm;
//!
//! let boot = vm::Qemu::new(&kernel, &initrd)
//!     .append("console=ttyS0 panic=-1 quiet")
//!     .timeout(vm::env_secs("NODEPREP_VM_TIMEOUT", 240))
//!     .boot(&dir.join("serial.log"));
//! let mut problems: Vec<String> = boot.qemu_problem(false).into_iter().collect();
//! problems.extend(boot.step_problems(&["step-a", "step-b"], &[]));
//! ```
//!
//! Guest markers, one a line on the serial console (the guest scripts print
//! them: `tests/vm/guest-lib.sh`, `tests/debian-vm/guest/lib.sh`):
//!
//! ```text
//! NODEPREP-STEP <name> PASS [(<seconds>s)]
//! NODEPREP-STEP <name> FAIL <why>      (followed by the step's transcript)
//! NODEPREP-NOTE <observation>
//! NODEPREP-SCENARIO-END
//! ```
//!
//! Transcript lines are indented with `  | `: a marker quoted in a transcript
//! is not a marker. Anything else may stand before a marker on its line (a
//! kernel message the console interleaved).
//!
//! Depends on std only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Written straight to the process's stderr, past the test harness' output
/// capture, so that skips, notes and timings are seen for passing tests too.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// `NODEPREP_VM_VERBOSE=1`: print the whole serial console even when the
/// test passes, and have the guest print every step's transcript (the kernel
/// command line gets `nodeprep.verbose=1`).
pub fn verbose() -> bool {
    std::env::var("NODEPREP_VM_VERBOSE").is_ok_and(|v| v == "1")
}

/// Seconds from the environment variable `var`, else `default`.
pub fn env_secs(var: &str, default: u64) -> Duration {
    let secs = std::env::var(var)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// `1.2s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether qemu can run here, or why not.
pub fn qemu_available() -> Result<(), String> {
    match Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "qemu-system-x86_64 --version failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "qemu-system-x86_64 not runnable ({e}); apt-get install qemu-system-x86"
        )),
    }
}

/// Panics unless `binary` is statically linked (no PT_INTERP program header:
/// no dynamic loader needed); `why` says why the guest needs that. A dynamic
/// binary is a build bug, not a missing prerequisite: check this first.
pub fn assert_static_binary(binary: &Path, why: &str) {
    match elf_has_interpreter(binary) {
        Ok(false) => {}
        Ok(true) => panic!(
            "{} is dynamically linked (has PT_INTERP); {why}. .cargo/config.toml must build \
             x86_64-unknown-linux-gnu with +crt-static",
            binary.display()
        ),
        Err(e) => panic!("cannot inspect {}: {e}", binary.display()),
    }
}

/// True when the ELF file has a PT_INTERP program header.
fn elf_has_interpreter(path: &Path) -> std::io::Result<bool> {
    let data = fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > data.len() {
            return Err(bad());
        }
        if u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a harness script printed: the `KEY=VALUE` lines of its stdout, and
/// its stderr.
pub struct ScriptOutput {
    name: String,
    pub vars: HashMap<String, String>,
    pub stderr: String,
}

impl ScriptOutput {
    /// The value of `KEY=`; panics when the script printed none.
    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{} printed no {key}=: {:?}", self.name, self.vars))
    }
}

/// Runs a harness script (`interpreter script ARGS`, stdin closed). Exit
/// status 77 means a missing prerequisite: `Err` with the `PREREQ-MISSING:
/// <why>` line of its stderr; so does a missing interpreter. Any other
/// failure panics with its stdout and stderr.
pub fn run_script<S: AsRef<OsStr>>(
    interpreter: &str,
    script: &Path,
    args: &[S],
) -> Result<ScriptOutput, String> {
    let name = script
        .strip_prefix(repo_dir())
        .unwrap_or(script)
        .display()
        .to_string();
    let o = match Command::new(interpreter)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{interpreter} is not installed (needed by {name})"))
        }
        Err(e) => panic!("cannot run {interpreter} {}: {e}", script.display()),
    };
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => {}
        Some(77) => {
            return Err(stderr
                .lines()
                .find_map(|l| l.strip_prefix("PREREQ-MISSING: "))
                .map(str::to_string)
                .unwrap_or_else(|| format!("{name} reported a missing prerequisite")))
        }
        _ => panic!(
            "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            o.status
        ),
    }
    Ok(ScriptOutput {
        vars: stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stderr: stderr.into_owned(),
        name,
    })
}

/// The CPU model qemu emulates: `NODEPREP_VM_CPU`, by default `qemu64`
/// (x86-64 baseline, what Debian's amd64 port requires). Under TCG the guest
/// pays for every CPU feature it uses: with `-cpu max` (AVX2 in glibc's
/// string functions, XSAVE of the large vector state on every context
/// switch, five-level page tables) a busybox guest spawning 3000 processes
/// took 29-36 s, with `qemu64` 24-29 s; the Debian 12 Podman host's two
/// boots, alone on the machine, 276 s and 191 s with `max`, 264 s and 153 s
/// with `qemu64`. Nothing nodeprep does depends on the CPU model.
pub fn cpu_model() -> String {
    std::env::var("NODEPREP_VM_CPU").unwrap_or_else(|_| "qemu64".to_string())
}

/// One boot of `qemu-system-x86_64 -accel tcg -cpu MODEL -nographic
/// -no-reboot -nic none -kernel K -initrd I -append LINE` (MODEL from
/// `cpu_model()`): KVM does not work on the development/CI machines; no
/// network card at all (no traffic may leave this machine); with
/// `-no-reboot` a guest reboot or panic (with `panic=-1` on the kernel
/// command line) ends qemu.
pub struct Qemu {
    kernel: PathBuf,
    initrd: PathBuf,
    memory_mb: u32,
    cpus: u32,
    append: String,
    extra: Vec<OsString>,
    timeout: Duration,
    label: String,
}

impl Qemu {
    /// 512 MiB, one CPU, an empty command line, a 240 s timeout.
    pub fn new(kernel: &Path, initrd: &Path) -> Qemu {
        Qemu {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            memory_mb: 512,
            cpus: 1,
            append: String::new(),
            extra: Vec::new(),
            timeout: Duration::from_secs(240),
            label: String::new(),
        }
    }

    pub fn memory_mb(mut self, mb: u32) -> Qemu {
        self.memory_mb = mb;
        self
    }

    pub fn cpus(mut self, n: u32) -> Qemu {
        self.cpus = n;
        self
    }

    /// The kernel command line; ` nodeprep.verbose=1` is added under
    /// [`verbose`].
    pub fn append(mut self, cmdline: &str) -> Qemu {
        self.append = cmdline.to_string();
        self
    }

    /// `-drive SPEC`.
    pub fn drive(self, spec: &str) -> Qemu {
        self.args(&["-drive", spec])
    }

    /// More qemu arguments (e.g. `-machine q35`).
    pub fn args(mut self, args: &[&str]) -> Qemu {
        self.extra.extend(args.iter().map(OsString::from));
        self
    }

    /// After this long qemu is killed and the boot counts as timed out.
    pub fn timeout(mut self, limit: Duration) -> Qemu {
        self.timeout = limit;
        self
    }

    /// A name for this boot (`boot 1`) in its problems, its timing line and
    /// the console printout.
    pub fn label(mut self, label: &str) -> Qemu {
        self.label = label.to_string();
        self
    }

    /// Boots and waits until qemu ends or the timeout; the serial console
    /// (qemu's stdout under -nographic) goes to `log_path` as it arrives.
    /// qemu is killed if the test unwinds meanwhile.
    pub fn boot(&self, log_path: &Path) -> Boot {
        // One qemu at a time on the machine, whichever test binary or
        // checkout starts it: two TCG guests on two cores slow each other
        // past their boot timeouts (and the times printed would mean
        // little). The wait is not part of the boot's timeout.
        let _machine = machine_lock();
        let mut cmdline = self.append.clone();
        if verbose() {
            // Read by the guest scripts: print passing steps' transcripts.
            cmdline.push_str(" nodeprep.verbose=1");
        }
        let started = Instant::now();
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", &cpu_model()])
            .args(["-m", &self.memory_mb.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(&self.extra)
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(cmdline)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qemu-system-x86_64");
        let mut guard = KillOnDrop(Some(child));
        let child = guard.0.as_mut().unwrap();

        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut file = fs::File::create(log_path).expect("create serial log");
        let out_reader = thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = file.write_all(&buf);
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        lines.push((started.elapsed(), line));
                    }
                }
            }
            lines
        });
        let err_reader = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            all
        });

        let mut timed_out = false;
        let pid = child.id();
        let mut cpu = Duration::ZERO;
        let (status, exited_ok) = loop {
            cpu = qemu_cpu(pid).unwrap_or(cpu);
            match child.try_wait().expect("wait for qemu") {
                Some(st) => break (st.to_string(), st.success()),
                None if started.elapsed() > self.timeout => {
                    timed_out = true;
                    let _ = child.kill();
                    let st = child.wait().expect("wait for killed qemu");
                    break (
                        format!(
                            "killed after the {}s timeout ({st})",
                            self.timeout.as_secs()
                        ),
                        false,
                    );
                }
                None => thread::sleep(Duration::from_millis(100)),
            }
        };
        let elapsed = started.elapsed();
        guard.0 = None;
        let lines = out_reader.join().unwrap();
        let mut log = lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let err = err_reader.join().unwrap();
        if !err.is_empty() {
            log.push_str("\n--- qemu stderr\n");
            log.push_str(&String::from_utf8_lossy(&err));
        }
        Boot {
            label: self.label.clone(),
            log_path: log_path.to_path_buf(),
            log,
            lines,
            elapsed,
            cpu,
            timed_out,
            status,
            exited_ok,
        }
    }
}

/// Kills qemu if the test unwinds while it runs.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A step's result on the console.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub name: String,
    pub passed: bool,
    /// The rest of the marker line: the reason of a FAIL, a PASS's time.
    pub detail: String,
}

/// One finished boot.
/// User + system CPU time of a running process, from /proc/PID/stat
/// (fields 14 and 15, in USER_HZ ticks: 100 per second in the kernel's ABI).
fn qemu_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub struct Boot {
    /// `boot 1`, or empty (see [`Qemu::label`]).
    pub label: String,
    pub log_path: PathBuf,
    /// The serial console (lines without their `\r`), then qemu's stderr.
    pub log: String,
    /// Each console line with the time it arrived, from qemu's start.
    pub lines: Vec<(Duration, String)>,
    pub elapsed: Duration,
    /// The CPU time qemu had used (user + system, all its threads) when
    /// last looked at, shortly before it ended: with TCG, what the guest
    /// cost the machine.
    pub cpu: Duration,
    pub timed_out: bool,
    /// How qemu ended (its exit status, or the timeout).
    pub status: String,
    pub exited_ok: bool,
}

impl Boot {
    /// A boot that printed `log` and exited 0: for tests of the parsing.
    pub fn from_log(log: &str) -> Boot {
        Boot {
            label: String::new(),
            log_path: PathBuf::from("serial.log"),
            log: log.to_string(),
            lines: log
                .lines()
                .map(|l| (Duration::ZERO, l.to_string()))
                .collect(),
            elapsed: Duration::ZERO,
            cpu: Duration::ZERO,
            timed_out: false,
            status: "exit status: 0".into(),
            exited_ok: true,
        }
    }

    /// `problem`, after `<label>: ` when the boot has a label.
    pub fn tagged(&self, problem: &str) -> String {
        if self.label.is_empty() {
            problem.to_string()
        } else {
            format!("{}: {problem}", self.label)
        }
    }

    /// Step results in the console, in order.
    pub fn steps(&self) -> Vec<Step> {
        steps(&self.log)
    }

    /// The NODEPREP-NOTE lines, without the marker.
    pub fn notes(&self) -> Vec<String> {
        notes(&self.log)
    }

    /// The kernel's panic line when the guest kernel panicked during its
    /// own start, before init ran anything (the console's kernel timestamp
    /// under `within_secs`, no line from userspace yet): nothing on the
    /// disk has changed, so the boot can simply be repeated. Under TCG
    /// with two vCPUs Debian 13's kernel has been seen to die this way
    /// ("Oops: int3" in sched_clock_cpu while patching its own text, 3.7 s
    /// into the boot), an emulator race rather than anything the test does.
    pub fn early_kernel_panic(&self, within_secs: f64) -> Option<String> {
        let panic = self
            .lines
            .iter()
            .map(|(_, l)| l)
            .find(|l| l.contains("Kernel panic - not syncing"))?;
        let stamp: f64 = panic
            .trim_start()
            .strip_prefix('[')?
            .split(']')
            .next()?
            .trim()
            .parse()
            .ok()?;
        // Userspace on the console: systemd's or a service's own lines
        // (`name[pid]:`), or the scenario's markers.
        let userspace = self.lines.iter().any(|(_, l)| {
            l.starts_with("NODEPREP-")
                || l.split_once(']').is_some_and(|(_, rest)| {
                    let word = rest.trim_start().split(':').next().unwrap_or("");
                    word.ends_with(']') && word.contains('[')
                })
        });
        (stamp < within_secs && !userspace).then(|| panic.trim().to_string())
    }

    /// Whether a console line (not a transcript line) contains `marker`.
    pub fn has_line(&self, marker: &str) -> bool {
        has_line(&self.log, marker)
    }

    /// When the first line containing `needle` arrived.
    pub fn seen_at(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// qemu was killed at the timeout, or (with `must_exit_ok`) ended with a
    /// failure status.
    pub fn qemu_problem(&self, must_exit_ok: bool) -> Option<String> {
        if self.timed_out {
            Some(self.tagged(&format!("qemu {}", self.status)))
        } else if must_exit_ok && !self.exited_ok {
            Some(self.tagged(&format!("qemu ended with {}", self.status)))
        } else {
            None
        }
    }

    /// The verdict on the steps: each of `expected` PASSed, each of
    /// `expected_failures` reported FAIL, no other step reported.
    pub fn step_problems(&self, expected: &[&str], expected_failures: &[&str]) -> Vec<String> {
        let found = self.steps();
        let mut problems = Vec::new();
        for step in expected {
            match found.iter().find(|s| s.name == *step) {
                Some(s) if s.passed => {}
                Some(s) => problems.push(format!("step {step} FAILED: {}", s.detail)),
                None => problems.push(format!("step {step}: no PASS/FAIL marker")),
            }
        }
        for s in &found {
            let known =
                expected.contains(&s.name.as_str()) || expected_failures.contains(&s.name.as_str());
            if !known {
                problems.push(format!(
                    "unexpected step {} {}{}",
                    s.name,
                    if s.passed { "PASS " } else { "FAIL: " },
                    s.detail
                ));
            }
        }
        for step in expected_failures {
            if !found.iter().any(|s| s.name == *step && !s.passed) {
                problems.push(format!("step {step} should have reported FAIL"));
            }
        }
        problems.iter().map(|p| self.tagged(p)).collect()
    }

    /// One line of timings: `<label>: <t> in qemu, scenario started at <t>
    /// (the first `start` line), scenario took <t> (to the first `end`
    /// line), shutdown <t> (qemu <status>)`.
    pub fn timing(&self, start: &str, end: &str) -> String {
        let mut s = self.tagged(&format!("{} in qemu", secs(self.elapsed)));
        if let Some(t) = self.seen_at(start) {
            s.push_str(&format!(", scenario started at {}", secs(t)));
            if let Some(e) = self.seen_at(end) {
                s.push_str(&format!(
                    ", scenario took {}, shutdown {}",
                    secs(e.saturating_sub(t)),
                    secs(self.elapsed.saturating_sub(e))
                ));
            }
        }
        s.push_str(&format!(
            ", qemu used {} of CPU (qemu {})",
            secs(self.cpu),
            self.status
        ));
        s
    }

    /// The whole console between two rulers: on stdout (shown with a failed
    /// test's output) or straight to stderr ([`note`]).
    pub fn print_console(&self, to_stdout: bool) {
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(", {}", self.label)
        };
        let text = format!(
            "===== serial console{label} ({}) =====\n{}\n===== end of serial console{label} =====",
            self.log_path.display(),
            self.log,
        );
        if to_stdout {
            println!("{text}");
        } else {
            note(&text);
        }
    }
}

/// Console lines that are not a step's transcript (`  | ...`).
fn console_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.starts_with("  |"))
}

/// Step results in `log`, in order.
pub fn steps(log: &str) -> Vec<Step> {
    const MARK: &str = "NODEPREP-STEP ";
    let mut found = Vec::new();
    for line in console_lines(log) {
        let Some(pos) = line.find(MARK) else {
            continue;
        };
        let mut parts = line[pos + MARK.len()..].splitn(3, ' ');
        let name = parts.next().unwrap_or("").to_string();
        let passed = match parts.next().unwrap_or("") {
            "PASS" => true,
            "FAIL" => false,
            _ => continue,
        };
        let detail = parts.next().unwrap_or("").to_string();
        found.push(Step {
            name,
            passed,
            detail,
        });
    }
    found
}

/// The NODEPREP-NOTE lines of `log`, without the marker.
pub fn notes(log: &str) -> Vec<String> {
    const MARK: &str = "NODEPREP-NOTE ";
    console_lines(log)
        .filter_map(|l| {
            l.find(MARK)
                .map(|p| l[p + MARK.len()..].trim_end().to_string())
        })
        .collect()
}

/// Whether a line of `log` (not a transcript line) contains `marker`.
pub fn has_line(log: &str, marker: &str) -> bool {
    console_lines(log).any(|l| l.contains(marker))
}

#[test]
fn early_kernel_panics_are_told_from_later_failures() {
    let early = "[    3.693144] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\n\
                 [    3.693680] Kernel panic - not syncing: Fatal exception in interrupt\n\
                 [    6.013347] Kernel Offset: 0xec00000\n";
    assert_eq!(
        Boot::from_log(early).early_kernel_panic(30.0).as_deref(),
        Some("[    3.693680] Kernel panic - not syncing: Fatal exception in interrupt")
    );
    // Too late into the boot, or after userspace wrote to the console, or
    // no panic at all: a failure as it is.
    let late = "[   45.1] Kernel panic - not syncing: Attempted to kill init!\n";
    assert_eq!(Boot::from_log(late).early_kernel_panic(30.0), None);
    let after_init = "[   12.5] cloud-init[553]: Cloud-init v. 25.1.4 running\n\
                      [   13.0] Kernel panic - not syncing: oops\n";
    assert_eq!(Boot::from_log(after_init).early_kernel_panic(30.0), None);
    let marker = "NODEPREP-BOOT 2 phase=2 uptime=9\n[   13.0] Kernel panic - not syncing: x\n";
    assert_eq!(Boot::from_log(marker).early_kernel_panic(30.0), None);
    assert_eq!(
        Boot::from_log("[ 1.0] all fine\n").early_kernel_panic(30.0),
        None
    );
}

#[test]
fn marker_parsing() {
    let log = "\x1b[2JNODEPREP-BOOT 1 phase=1 uptime=20.1\r\n\
               NODEPREP-STEP-BEGIN a\r\n\
               NODEPREP-STEP a PASS (0.3s)\r\n\
               [  25.1] random kernel line NODEPREP-STEP b FAIL nodeprep exited 1, expected 0\n\
               \x20 | NODEPREP-STEP c PASS\n\
               \x20 | NODEPREP-NOTE not a note\n\
               \x20 | NODEPREP-SCENARIO-END\n\
               NODEPREP-NOTE dnsmasq restarted: yes\r\n\
               NODEPREP-STEP d MAYBE\n\
               NODEPREP-SCENARIO-END\r\n";
    let step = |name: &str, passed, detail: &str| Step {
        name: name.into(),
        passed,
        detail: detail.into(),
    };
    assert_eq!(
        steps(log),
        vec![
            step("a", true, "(0.3s)"),
            step("b", false, "nodeprep exited 1, expected 0"),
        ]
    );
    assert_eq!(notes(log), vec!["dnsmasq restarted: yes".to_string()]);
    assert!(has_line(log, "NODEPREP-SCENARIO-END"));
    assert!(has_line(log, "NODEPREP-BOOT 1 phase=1"));
    assert!(!has_line(log, "NODEPREP-REBOOTING"));
    assert!(!has_line(
        "  | NODEPREP-SCENARIO-END\n",
        "NODEPREP-SCENARIO-END"
    ));
}

#[test]
fn step_verdicts() {
    let mut boot = Boot::from_log(
        "NODEPREP-STEP a PASS\r\n\
         NODEPREP-STEP b FAIL nodeprep exited 1, expected 0\r\n\
         NODEPREP-STEP x PASS (1.0s)\r\n",
    );
    assert_eq!(
        boot.step_problems(&["a", "x"], &["b"]),
        Vec::<String>::new()
    );
    assert_eq!(
        boot.step_problems(&["a", "b", "c"], &[]),
        [
            "step b FAILED: nodeprep exited 1, expected 0",
            "step c: no PASS/FAIL marker",
            "unexpected step x PASS (1.0s)",
        ]
    );
    assert_eq!(
        boot.step_problems(&["b", "x"], &["a"]),
        [
            "step b FAILED: nodeprep exited 1, expected 0",
            "step a should have reported FAIL",
        ]
    );
    assert_eq!(boot.qemu_problem(true), None);
    boot.label = "boot 2".into();
    boot.exited_ok = false;
    boot.status = "exit status: 1".into();
    assert_eq!(boot.qemu_problem(false), None);
    assert_eq!(
        boot.qemu_problem(true).as_deref(),
        Some("boot 2: qemu ended with exit status: 1")
    );
    assert_eq!(
        boot.step_problems(&["a", "x"], &[]),
        ["boot 2: unexpected step b FAIL: nodeprep exited 1, expected 0"]
    );
    boot.timed_out = true;
    boot.status = "killed after the 5s timeout (signal: 9 (SIGKILL))".into();
    assert_eq!(
        boot.qemu_problem(false).as_deref(),
        Some("boot 2: qemu killed after the 5s timeout (signal: 9 (SIGKILL))")
    );
}

/// An exclusive flock, held while a VM runs, on one file for the whole
/// machine (`/var/cache/nodeprep-tests/qemu.lock`, whatever
/// `$NODEPREP_TEST_CACHE` says, so that checkouts with caches of their own
/// still take turns). Released when the guard drops.
fn machine_lock() -> Option<nix::fcntl::Flock<std::fs::File>> {
    let dir = PathBuf::from("/var/cache/nodeprep-tests");
    std::fs::create_dir_all(&dir).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("qemu.lock"))
        .ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
}
