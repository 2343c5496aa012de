//! The full-host tier: nodeprep on real Debian hosts under qemu.
//!
//! The busybox VM of tests/vm_kernel.rs proves the netlink and file work on
//! a real kernel; this tier boots whole Debian hosts (systemd, Debian's own
//! kernel, systemd-networkd or NetworkManager, systemd-resolved or a plain
//! resolv.conf, Debian's dnsmasq, docker.io or Podman, cloud-init) and
//! brings them up end to end as an operator would: cloud-init runs the real
//! user data (`configs/cloud-init.yaml`, or `configs/cloud-init-podman.yaml`),
//! whose runcmd installs the nodeprep Debian package with apt-get and runs
//! `nodeprep apply`; the scenario then audits the host with live probes,
//! resolves the consul domain and other names from the host and from
//! containers (no `--dns`), reboots, breaks and repairs it, and removes the
//! layout (on one variant, then reboots again). The
//! consul and registrator containers run TEST STAND-IN images (`standins/`,
//! NOT Consul, NOT registrator: the real images cannot be had here); a
//! stand-in consul server at 10.0.0.10 plays the cluster the host joins, and
//! a small responder at 192.0.2.53 plays the site's DNS server.
//! The package's own steps run on the trixie host
//! (`guest/package-steps.sh`): its boot unit repairs drift left before a
//! reboot, its audit timer's service reports to the agent, `man` and bash
//! completion work, an upgrade keeps an edited conffile and the host, and
//! removing it leaves the host's layout running.
//!
//! Host variants (each its own test; one root per suite serves all of a
//! suite's variants):
//! - `debian_vm_bookworm_nm`: Debian 12, NetworkManager owning the network
//!   (no networkd), systemd-resolved running, dnsmasq backend, Docker; two
//!   boots, with the dockerd restart policy, drift made with nmcli, and
//!   `remove` (the keyfile and the link go);
//! - `debian_vm_trixie_plain`: Debian 13, no systemd-resolved (a plain
//!   /etc/resolv.conf), dnsmasq backend, Docker; three boots: the same
//!   scenario, then `remove`, a reboot, and `apply` again;
//! - `debian_vm_bookworm_resolved_podman`: Debian 12, `dns.backend =
//!   "resolved"`, no dnsmasq package, rootful Podman instead of docker.io
//!   (podman-restart.service brings the containers back); two boots.
//!
//! - `tests/debian-vm/build-root.sh --suite S` makes a root with mmdebstrap
//!   and caches it as a tarball in `$NODEPREP_TEST_CACHE/debian-vm` (default
//!   `/var/cache/nodeprep-tests`), keyed by the package list, the script and
//!   the suite;
//! - `tests/debian-vm/make-images.sh` builds the stand-in images and a
//!   busybox image in the host's dockerd (`tests/docker/`) and `docker
//!   save`s them into one tarball;
//! - `packaging/build-deb.sh --binary` packages this test's binary twice:
//!   the package cloud-init installs, and the same at a higher version for
//!   the upgrade;
//! - `tests/debian-vm/make-user-data.py` turns the user data into the VM's,
//!   with three test-plumbing substitutions only (copy the package from the
//!   disk instead of downloading it; name the stand-in images and the VM site's
//!   one DNS name in nodeprep.toml; `docker load` the images first), and
//!   validates it with `cloud-init schema --config-file` and `nodeprep config
//!   validate`;
//! - `tests/debian-vm/make-disk.sh --variant V` makes a fresh ext4 image from
//!   the root on every run, with the binary, both packages, the images, the user data
//!   (NoCloud seed), `tests/debian-vm/guest/` and the variant's changes;
//! - the image boots once per phase (`-kernel`/`-initrd` of the root's own
//!   kernel, `-nic none`: the VM has no network card). In boot 1 cloud-init
//!   runs the user data, then `nodeprep-test.service` (after
//!   `cloud-final.service`) runs phase 1 of `guest/scenario.sh` and reboots
//!   the host; qemu runs with `-no-reboot`, so that reboot ends it, and the
//!   test boots the same disk again for the next phase. Each boot has its own
//!   timeout and its own serial log. One qemu runs at a time on the machine.
//!
//! Serial console markers (`guest/lib.sh`):
//!
//! ```text
//! NODEPREP-BOOT <n> phase=<p> uptime=<s>
//! NODEPREP-STEP <name> PASS (<seconds>s)
//! NODEPREP-STEP <name> FAIL <why>      (followed by the step's transcript)
//! NODEPREP-NOTE <observation>          (printed by this test, always)
//! NODEPREP-REBOOTING uptime=<s>
//! NODEPREP-SCENARIO-END
//! ```
//!
//! Prerequisites (root, qemu, mmdebstrap or a cached root, a reachable
//! Debian mirror for the first build, a Docker engine on the host, a static
//! busybox, cloud-init and python3 with PyYAML on the host to validate the
//! user data): when one is missing the test FAILS
//! under `CI=true`; elsewhere it prints `SKIPPED (not a pass): <why>` on
//! stderr and returns. A skipped test has not passed.
//!
//! Environment: `NODEPREP_DEBIAN_VM_TIMEOUT` (seconds, default 900) bounds
//! each boot; `NODEPREP_VM_VERBOSE=1` prints the whole serial console, with
//! the transcript of every step, even when the test passes.

mod common;
#[path = "common/vm.rs"]
mod vm;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use vm::{note, secs, Boot, Qemu, ScriptOutput};

const TEST: &str = "debian_vm";

/// Phase 1 (first boot, after cloud-init ran the user data), in order; each
/// must PASS. The same on every host variant.
const PHASE1: &[&str] = &[
    "cloud-init-done",
    "check-all-ok",
    "apply-second-noop",
    "dns-chain",
    "container-dns",
    "host-dns",
    "upstream-down",
    "login-env",
];

/// Phase 2 (after the reboot) of every variant ...
const PHASE2_COMMON: &[&str] = &[
    "reboot-persists",
    "dns-after-reboot",
    "container-dns-after-reboot",
    "host-dns-after-reboot",
    "apply-after-reboot-noop",
];
/// ... then drift and repair (both dnsmasq variants), the last one with the
/// host's network backend running.
const DRIFT: &str = "drift-detected-and-repaired";

/// The Debian package's steps (guest/package-steps.sh), on the trixie host:
/// boot 1 ...
const PACKAGE1: &[&str] = &[
    "package-installed",
    "man-and-completion",
    "check-timer-reports",
];
/// ... boot 2 (after the reboot: the boot unit's repair comes first; the
/// upgrade before `remove`, the package's removal after it) ...
const PACKAGE2_FIRST: &[&str] = &["boot-unit-repaired"];
const PACKAGE2_LAST: &[&str] = &["upgrade-keeps-conffile", "remove", "package-removed"];
/// ... and boot 3 (after `remove` and a reboot), in order.
const PACKAGE3: &[&str] = &[
    "removed-after-reboot",
    "package-reinstalled",
    "apply-again",
    "apt-remove-keeps-layout",
];

/// A host variant: a root of `suite`, made into a disk by make-disk.sh's
/// `--variant`, brought up by the user data of `user_data`, and the steps of
/// each of its boots (the scenario, tests/debian-vm/guest/scenario.sh, runs
/// the same steps on every variant, with the variant's expectations).
struct Variant {
    name: &'static str,
    suite: &'static str,
    user_data: &'static str,
    phases: Vec<Vec<&'static str>>,
}

fn steps(parts: &[&[&'static str]]) -> Vec<&'static str> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// Debian 12 with NetworkManager owning the network and systemd-resolved
/// running: dnsmasq backend, Docker; the dockerd restart policy of
/// docker-dns, and `remove` at the end.
fn bookworm_nm() -> Variant {
    Variant {
        name: "nm",
        suite: "bookworm",
        user_data: "configs/cloud-init.yaml",
        phases: vec![
            steps(&[PHASE1, &["service-discovery", "report-ttl"]]),
            steps(&[
                PHASE2_COMMON,
                &[DRIFT, "repair-with-networkmanager"],
                &[
                    "docker-restart-policy",
                    "no-leader",
                    "single-server",
                    "remove",
                ],
            ]),
        ],
    }
}

/// Debian 13 without systemd-resolved (a plain /etc/resolv.conf): the same
/// scenario with the package's steps, then remove, a reboot, and apply
/// again.
fn trixie_plain() -> Variant {
    Variant {
        name: "plain",
        suite: "trixie",
        user_data: "configs/cloud-init.yaml",
        phases: vec![
            steps(&[PHASE1, PACKAGE1]),
            steps(&[
                PACKAGE2_FIRST,
                PHASE2_COMMON,
                &[DRIFT, "repair-with-networkd-active"],
                PACKAGE2_LAST,
            ]),
            PACKAGE3.to_vec(),
        ],
    }
}

/// Debian 12, dns.backend = "resolved", no dnsmasq package, and rootful
/// Podman as the engine (no docker.io).
fn bookworm_resolved_podman() -> Variant {
    Variant {
        name: "resolved-podman",
        suite: "bookworm",
        user_data: "configs/cloud-init-podman.yaml",
        phases: vec![PHASE1.to_vec(), PHASE2_COMMON.to_vec()],
    }
}

const END_MARKER: &str = "NODEPREP-SCENARIO-END";
const REBOOT_MARKER: &str = "NODEPREP-REBOOTING";

/// A missing prerequisite: a failure under CI=true, a loud skip elsewhere.
/// Returns normally only when the caller should skip.
fn prerequisite_missing(why: &str) {
    common::prerequisite_missing(&format!("{TEST}: {why}"));
}

/// Per boot. Measured on the idle 2-core machine: boot 1 (cloud-init
/// running the user data, `nodeprep apply` included, then phase 1) about
/// 170-240 s, boot 2 about 155-210 s. With a Debian root being built beside
/// it, boot 2 took 292 s just to reach its scenario: the bound is there to
/// end a hung guest, not to time a healthy one, hence 900 s (with the
/// package's steps at a load of 5-6, boot 1 took 417 s; its upgrade step
/// alone 108 s).
fn boot_timeout() -> Duration {
    vm::env_secs("NODEPREP_DEBIAN_VM_TIMEOUT", 900)
}

/// Runs a tests/debian-vm script with `interpreter` (see `vm::run_script`:
/// `Err` is a missing prerequisite); its stderr is passed through.
fn run_script(interpreter: &str, name: &str, args: &[&str]) -> Result<ScriptOutput, String> {
    let script = vm::repo_dir().join("tests/debian-vm").join(name);
    let out = vm::run_script(interpreter, &script, args)?;
    for line in out.stderr.lines() {
        note(&format!("  {line}"));
    }
    Ok(out)
}

struct Disk {
    image: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    release: String,
}

/// The disk to boot, made fresh, in its work dir; one line of what each
/// part took, for the timings.
struct Prepared {
    dir: PathBuf,
    disk: Disk,
    timings: Vec<String>,
}

/// One variant prepares at a time. They share the cached root and the
/// stand-in images: the second finds them made instead of building them
/// again beside the first, which also delayed the first boot.
static PREPARE: Mutex<()> = Mutex::new(());

/// The packages every variant installs (see `build_debs`), once built.
static DEBS: OnceLock<Vec<String>> = OnceLock::new();

/// The root, the stand-in images, the user data and the disk. `Err` is a
/// missing prerequisite.
fn prepare(binary: &Path, variant: &Variant) -> Result<Prepared, String> {
    let _one_at_a_time = PREPARE.lock().unwrap_or_else(|e| e.into_inner());
    let mut timings = Vec::new();
    let mut timing = |line: String| {
        note(&format!("debian-vm: {line}"));
        timings.push(line);
    };

    // The root: cached, or built now (about two minutes).
    let root = run_script("bash", "build-root.sh", &["--suite", variant.suite])?;
    timing(format!(
        "root {} ({}s, {})",
        root.get("ROOT_CACHE"),
        root.get("ROOT_SECONDS"),
        root.get("ROOT_TAR")
    ));

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debian-vm-{}", variant.name));
    fs::create_dir_all(&dir).expect("create work dir");
    let out = dir.to_str().expect("UTF-8 work dir");
    let binary_arg = binary.to_str().expect("UTF-8 binary path");

    // The stand-in images (and busybox), from the host's dockerd.
    let images = run_script("bash", "make-images.sh", &["--out", out])?;
    timing(format!(
        "images {} in {}s",
        images.get("IMAGES"),
        images.get("IMAGES_SECONDS")
    ));

    // The package, twice: what cloud-init installs, and the same rebuilt
    // at a higher version for the upgrade. Built by the first variant, used
    // by every one (the same binary, so the same packages).
    let started = Instant::now();
    let (debs, made_by) = match DEBS.get() {
        Some(debs) => (debs.clone(), "built for the first variant"),
        None => {
            let debs = build_debs(binary_arg)?;
            let _ = DEBS.set(debs.clone());
            (debs, "built")
        }
    };
    timing(format!(
        "packages {} {made_by} in {}",
        debs.iter()
            .map(|d| Path::new(d)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned())
            .collect::<Vec<_>>()
            .join(", "),
        secs(started.elapsed())
    ));

    // The real user data, with the test's three substitutions, validated.
    let started = Instant::now();
    let source = vm::repo_dir().join(variant.user_data);
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let user_data = run_script(
        python,
        "make-user-data.py",
        &[
            "--source",
            source.to_str().expect("UTF-8 source path"),
            "--out",
            out,
            "--nodeprep",
            binary_arg,
        ],
    )?;
    timing(format!(
        "user data from {} in {} ({})",
        variant.user_data,
        secs(started.elapsed()),
        user_data.get("SCHEMA")
    ));

    let made = run_script(
        "bash",
        "make-disk.sh",
        &[
            "--variant",
            variant.name,
            "--root-tar",
            root.get("ROOT_TAR"),
            "--binary",
            binary_arg,
            "--images",
            images.get("IMAGES_TAR"),
            "--user-data",
            user_data.get("USER_DATA"),
            "--deb",
            &debs[0],
            "--upgrade-deb",
            &debs[1],
            "--server-standin",
            images.get("CONSUL_STANDIN_BIN"),
            "--out",
            out,
        ],
    )?;
    let disk = Disk {
        image: PathBuf::from(made.get("DISK")),
        kernel: PathBuf::from(made.get("KERNEL")),
        initrd: PathBuf::from(made.get("INITRD")),
        release: made.get("KERNEL_RELEASE").to_string(),
    };
    timing(format!(
        "disk made in {}s (kernel {})",
        made.get("DISK_SECONDS"),
        disk.release
    ));
    Ok(Prepared { dir, disk, timings })
}

/// The two packages of `binary` (see `prepare`), in one directory shared by
/// the variants; paths in install, upgrade order.
fn build_debs(binary_arg: &str) -> Result<Vec<String>, String> {
    let upstream = env!("CARGO_PKG_VERSION");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-vm-debs");
    let mut debs = Vec::new();
    for (name, version) in [
        ("install", format!("{upstream}-1")),
        ("upgrade", format!("{upstream}-2")),
    ] {
        let deb_dir = dir.join(name);
        let _ = fs::remove_dir_all(&deb_dir);
        let built = vm::run_script(
            "bash",
            &vm::repo_dir().join("packaging/build-deb.sh"),
            &[
                "--binary",
                binary_arg,
                "--deb-version",
                &version,
                "--fast",
                "--out",
                deb_dir.to_str().expect("UTF-8 work dir"),
            ],
        )?;
        debs.push(built.get("DEB").to_string());
    }
    Ok(debs)
}

/// Boot `n` of the disk, its serial console in `serial-boot<n>.log` in
/// `dir`, and its timing line (to `final_marker`). Ends when qemu exits (the
/// guest powered off or rebooted: -no-reboot) or after the timeout.
fn boot(n: u32, disk: &Disk, dir: &Path, final_marker: &str, variant: &str) -> Boot {
    // A guest kernel that dies while starting (an emulator race under TCG,
    // see Boot::early_kernel_panic) has changed nothing: boot again, at
    // most twice, and say so. Any other failure counts as it is.
    let mut attempt = 1;
    loop {
        let boot = boot_once(n, disk, dir, final_marker, variant);
        match boot.early_kernel_panic(30.0) {
            Some(panic) if attempt < 3 => {
                note(&format!(
                    "debian-vm {variant}: boot {n}: the guest kernel panicked while starting ({panic}), before init ran; booting again (attempt {})",
                    attempt + 1
                ));
                attempt += 1;
            }
            _ => return boot,
        }
    }
}

fn boot_once(n: u32, disk: &Disk, dir: &Path, final_marker: &str, variant: &str) -> Boot {
    let boot = Qemu::new(&disk.kernel, &disk.initrd)
        .memory_mb(1024)
        .cpus(2)
        // q35: no floppy controller. On the default "pc" machine cloud-init
        // probes /dev/fd0 for its seed and the kernel logs I/O errors for
        // seconds.
        .args(&["-machine", "q35"])
        // panic=-1 with -no-reboot: a guest panic ends qemu at once.
        // systemd.firstboot=off: the image has no machine-id yet (a first
        // boot); systemd-firstboot must not prompt on the console.
        // systemd.getty_auto=no: no login prompt on the serial console.
        .append(
            "root=/dev/vda rw console=ttyS0 quiet panic=-1 systemd.firstboot=off systemd.getty_auto=no",
        )
        // cache=unsafe: the guest's flushes are not passed on; everything
        // still reaches the image file when qemu exits, which is all the
        // second boot needs.
        .drive(&format!(
            "file={},if=virtio,format=raw,cache=unsafe",
            disk.image.display()
        ))
        .timeout(boot_timeout())
        .label(&format!("boot {n}"))
        .boot(&dir.join(format!("serial-boot{n}.log")));
    note(&format!(
        "debian-vm {variant}: {}",
        boot.timing("NODEPREP-BOOT ", final_marker)
    ));
    boot
}

/// Problems of boot `n` (which runs phase `n`): every expected step
/// PASSed, no other step, the boot marker and `final_marker` came, qemu
/// ended by itself.
fn verdict(boot: &Boot, n: u32, expected: &[&str], final_marker: &str) -> Vec<String> {
    let mut problems: Vec<String> = boot.qemu_problem(true).into_iter().collect();
    let boot_marker = format!("NODEPREP-BOOT {n} phase={n}");
    if !boot.has_line(&boot_marker) {
        problems.push(boot.tagged(&format!(
            "no '{boot_marker}' marker (the scenario unit did not start, or started in the wrong phase)"
        )));
    }
    problems.extend(boot.step_problems(expected, &[]));
    if !boot.has_line(final_marker) {
        problems.push(boot.tagged(&format!("no {final_marker} marker")));
    }
    problems
}

#[test]
fn debian_vm_bookworm_nm() {
    run_variant(bookworm_nm());
}

#[test]
fn debian_vm_trixie_plain() {
    run_variant(trixie_plain());
}

#[test]
fn debian_vm_bookworm_resolved_podman() {
    run_variant(bookworm_resolved_podman());
}

/// Prepares the variant's disk and boots it once per phase; every phase
/// but the last ends with the guest's own reboot.
fn run_variant(variant: Variant) {
    let total = Instant::now();
    let name = variant.name;
    let binary = Path::new(env!("CARGO_BIN_EXE_nodeprep"));
    vm::assert_static_binary(
        binary,
        "the guest's glibc is of another version than the build machine's",
    );
    if let Err(why) = vm::qemu_available() {
        return prerequisite_missing(&why);
    }
    let Prepared { dir, disk, timings } = match prepare(binary, &variant) {
        Ok(prepared) => prepared,
        Err(why) => return prerequisite_missing(&why),
    };

    let mut problems = Vec::new();
    let mut boots: Vec<Boot> = Vec::new();
    let last = variant.phases.len();
    for (i, expected) in variant.phases.iter().enumerate() {
        let n = i as u32 + 1;
        let marker = if n as usize == last {
            END_MARKER
        } else {
            REBOOT_MARKER
        };
        if let Some(prev) = boots.last() {
            // The next phase needs the previous one to have ended with its
            // reboot (the phase file is written just before it).
            if !prev.has_line(REBOOT_MARKER) {
                problems.push(format!(
                    "boot {n} not attempted: boot {} did not reach its reboot",
                    n - 1
                ));
                break;
            }
        }
        let b = boot(n, &disk, &dir, marker, name);
        problems.extend(verdict(&b, n, expected, marker));
        boots.push(b);
    }

    // What the real host showed, for whoever decides nodeprep's behaviour.
    for b in &boots {
        let label = &b.label;
        for n in b.notes() {
            note(&format!("debian-vm {name}: NOTE ({label}): {n}"));
        }
        for s in b.steps() {
            note(&format!(
                "debian-vm {name}: {label}: {} {} {}",
                s.name,
                if s.passed { "PASS" } else { "FAIL" },
                s.detail
            ));
        }
    }
    note(&format!(
        "debian-vm {name}: timings: {}; {}; total {}",
        timings.join("; "),
        boots
            .iter()
            .map(|b| format!("{} {}", b.label, secs(b.elapsed)))
            .collect::<Vec<_>>()
            .join("; "),
        secs(total.elapsed())
    ));

    if !problems.is_empty() {
        for b in &boots {
            b.print_console(true);
        }
        panic!(
            "{TEST} {name}: {} problem(s):\n  {}\n(serial logs above and in {}; disk image kept in {})",
            problems.len(),
            problems.join("\n  "),
            dir.display(),
            disk.image.display()
        );
    }
    if vm::verbose() {
        for b in &boots {
            b.print_console(false);
        }
    }
    // About 1 GB of blocks: not kept once the run passed.
    let _ = fs::remove_file(&disk.image);
}

#[test]
fn verdict_of_a_phase() {
    let mut boot = Boot::from_log(
        "NODEPREP-BOOT 2 phase=2 uptime=20.1\n\
         NODEPREP-STEP a PASS (0.3s)\n\
         NODEPREP-SCENARIO-END\n",
    );
    boot.label = "boot 2".into();
    assert!(verdict(&boot, 2, &["a"], END_MARKER).is_empty());
    assert_eq!(
        verdict(&boot, 1, &["a", "b"], REBOOT_MARKER),
        [
            "boot 2: no 'NODEPREP-BOOT 1 phase=1' marker (the scenario unit did not start, or started in the wrong phase)",
            "boot 2: step b: no PASS/FAIL marker",
            "boot 2: no NODEPREP-REBOOTING marker",
        ]
    );
}
