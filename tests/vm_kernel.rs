//! Real-kernel tests of the `link` and `consul-config` resources.
//!
//! The development and CI kernels have no dummy link type (DESIGN.md
//! section 7), so these tests boot Debian's own kernel (the package behind
//! `linux-image-amd64`, which ships `dummy.ko`) under
//! `qemu-system-x86_64 -accel tcg` with a busybox initramfs holding the
//! statically linked nodeprep binary. The guest runs
//! `tests/vm/guest-scenario.sh`, which prints one marker line per step on the
//! serial console:
//!
//! ```text
//! NODEPREP-STEP <name> PASS
//! NODEPREP-STEP <name> FAIL <why>      (followed by the step's transcript)
//! NODEPREP-SCENARIO-END
//! ```
//!
//! The VM has no network card (`-nic none`). The kernel .deb and the
//! extracted kernel are cached in `$NODEPREP_TEST_CACHE` (default
//! `/var/cache/nodeprep-tests`) by `tests/vm/build.sh`.
//!
//! Prerequisites (qemu, busybox-static, cpio, the kernel package): when one is
//! missing these tests FAIL under `CI=true`; elsewhere they print
//! `SKIPPED: <why>` on stderr and return. A skipped test has not passed.
//!
//! Environment: `NODEPREP_VM_TIMEOUT` (seconds, default 240) bounds each boot;
//! `NODEPREP_VM_VERBOSE=1` prints the whole serial console, with the
//! transcript of every step, even when the test passes.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Every step of tests/vm/guest-scenario.sh, in order; each must PASS.
const SCENARIO_STEPS: &[&str] = &[
    "guest-setup",
    "binary-runs",
    "fresh-apply",
    "second-apply-noop",
    "check-clean",
    "down-drift",
    "dry-run-pending",
    "addr-removed",
    "other-address-kept",
    "not-root-refused",
    "bridge-refused",
    "relink-after-bridge",
    "bind-auto-no-route",
    "bind-auto",
    "dummy-module-autocreate",
    "dnsmasq-missing",
    "remove-created-link",
    "remove-keeps-foreign-link",
    "remove-shared-link",
];

/// Steps of tests/vm/selftest-scenario.sh (busybox only) that must PASS.
const SELFTEST_STEPS: &[&str] = &[
    "selftest-modules",
    "selftest-ip-dummy",
    "selftest-ip-bridge",
    "selftest-route",
    "selftest-rmmod-quirk",
    "selftest-su-nobody",
    "selftest-etc-writable",
];

const END_MARKER: &str = "NODEPREP-SCENARIO-END";

/// One VM at a time: two TCG guests on a two-core machine slow each other
/// down (and the boot times printed would mean little).
static VM_LOCK: Mutex<()> = Mutex::new(());

/// Written straight to the process's stderr, past the test harness' output
/// capture, so that skips and boot times are seen even for passing tests.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// A missing prerequisite: a failure under CI=true, a loud skip elsewhere.
/// Returns normally only when the caller should skip.
fn prerequisite_missing(test: &str, why: &str) {
    common::prerequisite_missing(&format!("{test}: {why}"));
}

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("vm-kernel")
        .join(name);
    fs::create_dir_all(&dir).expect("create work dir");
    dir
}

/// The scenario took 22 s of wall time on an idle two-core machine and 42 s
/// while another build ran beside it (TCG emulation is CPU bound); a single
/// hung nodeprep call is cut after 60 s inside the guest.
fn timeout() -> Duration {
    let secs = std::env::var("NODEPREP_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(240);
    Duration::from_secs(secs)
}

fn verbose() -> bool {
    std::env::var("NODEPREP_VM_VERBOSE").is_ok_and(|v| v == "1")
}

fn qemu_available() -> Result<(), String> {
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

/// True when the ELF file has a PT_INTERP program header (needs a dynamic
/// loader, which the busybox initramfs does not have).
fn elf_has_interpreter(path: &Path) -> std::io::Result<bool> {
    let data = fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > data.len() {
            return Err(bad());
        }
        let p_type = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
        if p_type == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

struct Vm {
    kernel: PathBuf,
    initrd: PathBuf,
    package: String,
}

enum Build {
    Ready(Vm),
    Missing(String),
}

/// Runs tests/vm/build.sh; its exit status 77 means a missing prerequisite.
fn build_vm(out: &Path, binary: Option<&Path>, scenario: &Path) -> Build {
    let script = repo_dir().join("tests/vm/build.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--out")
        .arg(out)
        .arg("--scenario")
        .arg(scenario)
        .stdin(Stdio::null());
    if let Some(b) = binary {
        cmd.arg("--binary").arg(b);
    }
    let started = Instant::now();
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => {}
        Some(77) => {
            let why = stderr
                .lines()
                .find_map(|l| l.strip_prefix("PREREQ-MISSING: "))
                .unwrap_or("tests/vm/build.sh reported a missing prerequisite")
                .to_string();
            return Build::Missing(why);
        }
        _ => panic!(
            "tests/vm/build.sh failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            o.status
        ),
    }
    let get = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("build.sh printed no {key}=:\n{stdout}"))
            .to_string()
    };
    let vm = Vm {
        kernel: PathBuf::from(get("KERNEL")),
        initrd: PathBuf::from(get("INITRD")),
        package: format!(
            "{} {} (kernel {})",
            get("KERNEL_PACKAGE"),
            get("KERNEL_VERSION"),
            get("KERNEL_RELEASE")
        ),
    };
    note(&format!(
        "vm: built initramfs in {:.1}s with {}",
        started.elapsed().as_secs_f64(),
        vm.package
    ));
    Build::Ready(vm)
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

struct Boot {
    log: String,
    elapsed: Duration,
    timed_out: bool,
    status: String,
}

/// Boots the VM, capturing the serial console (qemu's stdout under
/// -nographic) into `log_path` as it arrives and into the returned string.
fn boot(vm: &Vm, log_path: &Path) -> Boot {
    let limit = timeout();
    let mut cmdline = String::from("console=ttyS0 panic=-1 quiet");
    if verbose() {
        // Read by tests/vm/guest-lib.sh: print passing steps' transcripts.
        cmdline.push_str(" nodeprep.verbose=1");
    }
    let started = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        // KVM does not work on the development/CI machines.
        .args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"])
        // No network card at all: no traffic may leave this machine.
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&vm.kernel)
        .arg("-initrd")
        .arg(&vm.initrd)
        // panic=-1 + -no-reboot: a guest panic (e.g. /init dying) ends
        // qemu instead of rebooting forever.
        .arg("-append")
        .arg(cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu-system-x86_64");
    let mut guard = KillOnDrop(Some(child));
    let child = guard.0.as_mut().unwrap();

    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut file = fs::File::create(log_path).expect("create serial log");
    let out_reader = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    let _ = file.write_all(&buf[..n]);
                }
            }
        }
        all
    });
    let err_reader = thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        all
    });

    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("wait for qemu") {
            Some(st) => break st.to_string(),
            None if started.elapsed() > limit => {
                timed_out = true;
                let _ = child.kill();
                let st = child.wait().expect("wait for killed qemu");
                break format!("killed after {}s timeout ({st})", limit.as_secs());
            }
            None => thread::sleep(Duration::from_millis(100)),
        }
    };
    let elapsed = started.elapsed();
    guard.0 = None;
    let mut log = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let err = err_reader.join().unwrap();
    if !err.is_empty() {
        log.push_str("\n--- qemu stderr\n");
        log.push_str(&String::from_utf8_lossy(&err));
    }
    Boot {
        log,
        elapsed,
        timed_out,
        status,
    }
}

/// Step results found in the serial log: (name, passed, rest of the line).
fn markers(log: &str) -> Vec<(String, bool, String)> {
    let mut found = Vec::new();
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r');
        // Transcript lines of a failed step are indented with "  | ".
        if line.starts_with("  |") {
            continue;
        }
        let Some(pos) = line.find("NODEPREP-STEP ") else {
            continue;
        };
        let mut parts = line[pos + "NODEPREP-STEP ".len()..].splitn(3, ' ');
        let name = parts.next().unwrap_or("").to_string();
        let verdict = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("").to_string();
        match verdict {
            "PASS" => found.push((name, true, rest)),
            "FAIL" => found.push((name, false, rest)),
            _ => {}
        }
    }
    found
}

fn has_end_marker(log: &str) -> bool {
    log.lines()
        .any(|l| l.trim_end_matches('\r').trim_start() == END_MARKER)
}

/// The common check: every expected step PASSed, no step FAILed except those
/// listed in `expected_failures`, the END marker came, qemu was not killed.
/// Returns the list of problems.
fn verdict(boot: &Boot, expected: &[&str], expected_failures: &[&str]) -> Vec<String> {
    let found = markers(&boot.log);
    let mut problems = Vec::new();
    if boot.timed_out {
        problems.push(format!("qemu {}", boot.status));
    }
    for step in expected {
        match found.iter().find(|(n, _, _)| n == step) {
            Some((_, true, _)) => {}
            Some((_, false, why)) => problems.push(format!("step {step} FAILED: {why}")),
            None => problems.push(format!("step {step}: no PASS/FAIL marker")),
        }
    }
    for (name, passed, why) in &found {
        let known = expected.contains(&name.as_str()) || expected_failures.contains(&name.as_str());
        if !known {
            problems.push(format!(
                "unexpected step {name} {}{why}",
                if *passed { "PASS " } else { "FAIL: " }
            ));
        }
    }
    for step in expected_failures {
        if !found.iter().any(|(n, passed, _)| n == step && !passed) {
            problems.push(format!("step {step} should have reported FAIL"));
        }
    }
    if !has_end_marker(&boot.log) {
        problems.push(format!("no {END_MARKER} marker (qemu: {})", boot.status));
    }
    problems
}

fn report(test: &str, vm: &Vm, boot: &Boot, log_path: &Path, problems: &[String]) {
    note(&format!(
        "vm: {test}: boot + scenario took {:.1}s wall time ({}; qemu {})",
        boot.elapsed.as_secs_f64(),
        vm.package,
        boot.status
    ));
    if verbose() && problems.is_empty() {
        note(&format!(
            "===== serial console ({}) =====\n{}\n===== end of serial console =====",
            log_path.display(),
            boot.log
        ));
    }
    if !problems.is_empty() {
        println!(
            "===== serial console ({}) =====\n{}\n===== end of serial console =====",
            log_path.display(),
            boot.log
        );
        panic!(
            "{test}: {} problem(s):\n  {}\n(serial log above and in {})",
            problems.len(),
            problems.join("\n  "),
            log_path.display()
        );
    }
}

/// Boots with the busybox-only self-test scenario: proves the harness
/// (kernel, modules, busybox `ip`, markers, failure transcripts) on its own,
/// independently of nodeprep.
#[test]
fn vm_harness_selftest() {
    const TEST: &str = "vm_harness_selftest";
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = qemu_available() {
        return prerequisite_missing(TEST, &why);
    }
    let dir = work_dir("selftest");
    let scenario = repo_dir().join("tests/vm/selftest-scenario.sh");
    let vm = match build_vm(&dir, None, &scenario) {
        Build::Ready(vm) => vm,
        Build::Missing(why) => return prerequisite_missing(TEST, &why),
    };
    let log_path = dir.join("serial.log");
    let boot = boot(&vm, &log_path);
    let mut problems = verdict(&boot, SELFTEST_STEPS, &["selftest-deliberate-fail"]);
    // A failing step's transcript must reach the host.
    if !boot
        .log
        .contains("  | this transcript line must reach the host")
    {
        problems.push("the transcript of selftest-deliberate-fail is missing".into());
    }
    report(TEST, &vm, &boot, &log_path, &problems);
}

/// The nodeprep scenario on a real kernel with dummy.ko.
#[test]
fn vm_link_and_consul_config_on_real_kernel() {
    const TEST: &str = "vm_link_and_consul_config_on_real_kernel";
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let binary = Path::new(env!("CARGO_BIN_EXE_nodeprep"));
    // Checked before any prerequisite: a dynamic binary is a build bug, not a
    // missing prerequisite.
    match elf_has_interpreter(binary) {
        Ok(false) => {}
        Ok(true) => panic!(
            "{} is dynamically linked (has PT_INTERP); the VM has no libc. \
             .cargo/config.toml must build x86_64-unknown-linux-gnu with +crt-static",
            binary.display()
        ),
        Err(e) => panic!("cannot inspect {}: {e}", binary.display()),
    }
    if let Err(why) = qemu_available() {
        return prerequisite_missing(TEST, &why);
    }
    let dir = work_dir("scenario");
    let scenario = repo_dir().join("tests/vm/guest-scenario.sh");
    let vm = match build_vm(&dir, Some(binary), &scenario) {
        Build::Ready(vm) => vm,
        Build::Missing(why) => return prerequisite_missing(TEST, &why),
    };
    let log_path = dir.join("serial.log");
    let boot = boot(&vm, &log_path);
    let problems = verdict(&boot, SCENARIO_STEPS, &[]);
    report(TEST, &vm, &boot, &log_path, &problems);
}

#[test]
fn marker_parsing() {
    let log = "\x1b[2JNODEPREP-GUEST-BOOTED 6.1\r\n\
               NODEPREP-STEP-BEGIN a\r\n\
               NODEPREP-STEP a PASS\r\n\
               NODEPREP-STEP b FAIL nodeprep exited 1, expected 0\r\n\
               \x20 | NODEPREP-STEP c PASS\r\n\
               NODEPREP-SCENARIO-END\r\n";
    let m = markers(log);
    assert_eq!(
        m,
        vec![
            ("a".to_string(), true, String::new()),
            (
                "b".to_string(),
                false,
                "nodeprep exited 1, expected 0".to_string()
            ),
        ]
    );
    assert!(has_end_marker(log));
    let boot = Boot {
        log: log.into(),
        elapsed: Duration::ZERO,
        timed_out: false,
        status: "exit status: 0".into(),
    };
    assert!(verdict(&boot, &["a"], &["b"]).is_empty());
    let problems = verdict(&boot, &["a", "b", "c"], &[]);
    assert_eq!(problems.len(), 2, "{problems:?}");
}
