//! Real-kernel tests of the `link` and `consul-config` resources.
//!
//! The development and CI kernels have no dummy link type (ARCHITECTURE.md,
//! Tests), so these tests boot Debian's own kernel (the package behind
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
#[path = "common/vm.rs"]
mod vm;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vm::{note, Boot, Qemu};

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

/// A missing prerequisite: a failure under CI=true, a loud skip elsewhere.
/// Returns normally only when the caller should skip.
fn prerequisite_missing(test: &str, why: &str) {
    common::prerequisite_missing(&format!("{test}: {why}"));
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
    vm::env_secs("NODEPREP_VM_TIMEOUT", 240)
}

struct Vm {
    kernel: PathBuf,
    initrd: PathBuf,
    package: String,
}

/// Runs tests/vm/build.sh; `Err` is a missing prerequisite.
fn build_vm(out: &Path, binary: Option<&Path>, scenario: &Path) -> Result<Vm, String> {
    let mut args: Vec<&OsStr> = vec![
        "--out".as_ref(),
        out.as_os_str(),
        "--scenario".as_ref(),
        scenario.as_os_str(),
    ];
    if let Some(b) = binary {
        args.extend(["--binary".as_ref(), b.as_os_str()]);
    }
    let started = Instant::now();
    let built = vm::run_script("bash", &vm::repo_dir().join("tests/vm/build.sh"), &args)?;
    let vm = Vm {
        kernel: PathBuf::from(built.get("KERNEL")),
        initrd: PathBuf::from(built.get("INITRD")),
        package: format!(
            "{} {} (kernel {})",
            built.get("KERNEL_PACKAGE"),
            built.get("KERNEL_VERSION"),
            built.get("KERNEL_RELEASE")
        ),
    };
    note(&format!(
        "vm: built initramfs in {} with {}",
        vm::secs(started.elapsed()),
        vm.package
    ));
    Ok(vm)
}

/// Boots the VM; the serial console goes to `log_path`.
fn boot(vm: &Vm, log_path: &Path) -> Boot {
    // panic=-1 + -no-reboot: a guest panic (e.g. /init dying) ends qemu
    // instead of rebooting forever.
    Qemu::new(&vm.kernel, &vm.initrd)
        .memory_mb(512)
        .cpus(1)
        .append("console=ttyS0 panic=-1 quiet")
        .timeout(timeout())
        .boot(log_path)
}

/// The common check: every expected step PASSed, no step FAILed except those
/// listed in `expected_failures`, the END marker came, qemu was not killed.
/// Returns the list of problems.
fn verdict(boot: &Boot, expected: &[&str], expected_failures: &[&str]) -> Vec<String> {
    let mut problems: Vec<String> = boot.qemu_problem(false).into_iter().collect();
    problems.extend(boot.step_problems(expected, expected_failures));
    if !boot.has_line(END_MARKER) {
        problems.push(format!("no {END_MARKER} marker (qemu: {})", boot.status));
    }
    problems
}

fn report(test: &str, vm: &Vm, boot: &Boot, problems: &[String]) {
    note(&format!(
        "vm: {test}: boot + scenario took {} wall time ({}; qemu {})",
        vm::secs(boot.elapsed),
        vm.package,
        boot.status
    ));
    if vm::verbose() && problems.is_empty() {
        boot.print_console(false);
    }
    if !problems.is_empty() {
        boot.print_console(true);
        panic!(
            "{test}: {} problem(s):\n  {}\n(serial log above and in {})",
            problems.len(),
            problems.join("\n  "),
            boot.log_path.display()
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
    if let Err(why) = vm::qemu_available() {
        return prerequisite_missing(TEST, &why);
    }
    let dir = work_dir("selftest");
    let scenario = vm::repo_dir().join("tests/vm/selftest-scenario.sh");
    let vm = match build_vm(&dir, None, &scenario) {
        Ok(vm) => vm,
        Err(why) => return prerequisite_missing(TEST, &why),
    };
    let boot = boot(&vm, &dir.join("serial.log"));
    let mut problems = verdict(&boot, SELFTEST_STEPS, &["selftest-deliberate-fail"]);
    // A failing step's transcript must reach the host.
    if !boot
        .log
        .contains("  | this transcript line must reach the host")
    {
        problems.push("the transcript of selftest-deliberate-fail is missing".into());
    }
    report(TEST, &vm, &boot, &problems);
}

/// The nodeprep scenario on a real kernel with dummy.ko.
#[test]
fn vm_link_and_consul_config_on_real_kernel() {
    const TEST: &str = "vm_link_and_consul_config_on_real_kernel";
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let binary = Path::new(env!("CARGO_BIN_EXE_nodeprep"));
    vm::assert_static_binary(binary, "the VM has no libc");
    if let Err(why) = vm::qemu_available() {
        return prerequisite_missing(TEST, &why);
    }
    let dir = work_dir("scenario");
    let scenario = vm::repo_dir().join("tests/vm/guest-scenario.sh");
    let vm = match build_vm(&dir, Some(binary), &scenario) {
        Ok(vm) => vm,
        Err(why) => return prerequisite_missing(TEST, &why),
    };
    let boot = boot(&vm, &dir.join("serial.log"));
    let problems = verdict(&boot, SCENARIO_STEPS, &[]);
    report(TEST, &vm, &boot, &problems);
}

#[test]
fn verdict_of_a_scenario() {
    let boot = Boot::from_log(
        "\x1b[2JNODEPREP-GUEST-BOOTED 6.1\r\n\
         NODEPREP-STEP-BEGIN a\r\n\
         NODEPREP-STEP a PASS\r\n\
         NODEPREP-STEP b FAIL nodeprep exited 1, expected 0\r\n\
         \x20 | NODEPREP-STEP c PASS\r\n\
         NODEPREP-SCENARIO-END\r\n",
    );
    assert!(verdict(&boot, &["a"], &["b"]).is_empty());
    let problems = verdict(&boot, &["a", "b", "c"], &[]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    let unfinished = Boot::from_log("NODEPREP-STEP a PASS\n");
    assert_eq!(
        verdict(&unfinished, &["a"], &[]),
        ["no NODEPREP-SCENARIO-END marker (qemu: exit status: 0)"]
    );
}
