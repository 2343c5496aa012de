//! A hostile tree, hostile inputs and a hostile environment, against the
//! real binary: links in every managed position never lead out of the
//! `--root` tree, special files never block or flood a run, output errors
//! never abort, harmful values are refused, directories get their modes
//! whatever the umask, stale temporary files go, and SIGTERM ends a run
//! cleanly. Every case also proves that a run after the fault converges.

mod common;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TestEnv, BIN};

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
    "/etc/systemd",
    "/etc/systemd/network",
    "/etc/dnsmasq.d",
    "/etc/consul.d",
    "/var",
    "/var/lib",
    "/var/lib/nodeprep",
];

/// Runs `cmd` and fails the test if it takes longer than `limit` (it is
/// killed then): nothing nodeprep does may hang.
fn bounded(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Run::from(child.wait_with_output().unwrap());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} hung for {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn nodeprep(env: &TestEnv, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("--root")
        .arg(env.root())
        .arg("--config")
        .arg(env.config())
        .args(args);
    bounded(cmd, Duration::from_secs(20))
}

/// Every entry under `dir` with its kind and, for regular files, bytes:
/// read without ever opening a FIFO or device.
fn listing(dir: &Path) -> Vec<(PathBuf, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            let (kind, content) = if t.is_dir() {
                stack.push(p.clone());
                (format!("dir {:o}", m.mode() & 0o7777), Vec::new())
            } else if t.is_symlink() {
                (
                    format!("link {}", std::fs::read_link(&p).unwrap().display()),
                    Vec::new(),
                )
            } else if t.is_file() {
                ("file".to_string(), std::fs::read(&p).unwrap())
            } else {
                ("special".to_string(), Vec::new())
            };
            out.push((p, kind, content));
        }
    }
    out.sort();
    out
}

/// A tree, a place outside it that links point to, and what is there.
struct Outside {
    env: TestEnv,
    dir: PathBuf,
}

impl Outside {
    fn new() -> Outside {
        let env = TestEnv::new();
        let dir = env.dir.path().join("outside");
        for d in DIRS {
            std::fs::create_dir_all(dir.join(d.trim_start_matches('/'))).unwrap();
        }
        for f in FILES {
            std::fs::write(dir.join(f.trim_start_matches('/')), "outside\n").unwrap();
        }
        Outside { env, dir }
    }

    fn target(&self, host: &str) -> PathBuf {
        self.dir.join(host.trim_start_matches('/'))
    }
}

fn place(path: &Path) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let _ = std::fs::remove_dir_all(path);
    let _ = std::fs::remove_file(path);
}

/// Removes every link and special file from the tree, as an operator would
/// after reading the error, so that the next apply must converge.
fn clear_obstacles(root: &Path) {
    for (p, kind, _) in listing(root) {
        if kind.starts_with("link") || kind == "special" {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn converges(env: &TestEnv) {
    let apply = nodeprep(env, &["--format", "json", "apply"]);
    apply.expect_code(0);
    nodeprep(env, &["check", "--no-probes"]).expect_code(0);
}

/// Item 1: a link in any directory position, absolute or relative, and in
/// any file position (the state record included), never makes nodeprep read
/// or write outside the tree. Links to places inside the tree are followed
/// there; a managed file that is a link is refused, naming it.
#[test]
fn links_in_every_managed_position_never_lead_out_of_the_tree() {
    for pos in DIRS
        .iter()
        .chain(FILES)
        .chain(&["/var/lib/nodeprep/state.json"])
    {
        for how in ["absolute", "relative"] {
            let o = Outside::new();
            let env = &o.env;
            let before = listing(&o.dir);
            let at = env.path(pos);
            place(&at);
            let target = o.target(pos);
            let depth = pos.matches('/').count() + 3;
            let link = match how {
                "absolute" => target.clone(),
                _ => PathBuf::from("../".repeat(depth)).join(target.strip_prefix("/").unwrap()),
            };
            symlink(&link, &at).unwrap();
            for args in [&["apply"][..], &["check"], &["remove"]] {
                let run = nodeprep(env, args);
                assert!(
                    [0, 1, 2].contains(&run.code),
                    "{pos} ({how}) {args:?}: exit {}\n{}",
                    run.code,
                    run.stderr
                );
                if run.code == 1 && FILES.contains(pos) {
                    let all = format!("{}{}", run.stdout, run.stderr);
                    assert!(
                        all.contains(pos.trim_start_matches('/')),
                        "{pos}: the error does not name it:\n{all}"
                    );
                }
            }
            assert_eq!(
                listing(&o.dir),
                before,
                "{pos} ({how}): something outside the tree changed"
            );
            assert_eq!(
                std::fs::read_link(&at).unwrap(),
                link,
                "{pos}: the link changed"
            );
            clear_obstacles(&env.root());
            converges(env);
        }
    }
}

/// Item 1: absolute links inside an image tree name the image's own paths:
/// followed inside the tree, never on the building host.
#[test]
fn absolute_links_inside_the_tree_are_followed_inside_it() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("/srv/dnsmasq.d")).unwrap();
    std::fs::create_dir_all(env.path("/etc")).unwrap();
    symlink("/srv/dnsmasq.d", env.path("/etc/dnsmasq.d")).unwrap();
    // A relative link climbing above the root stops at the root.
    symlink("../../../../../../../srv/consul", env.path("/etc/consul.d")).unwrap();
    std::fs::create_dir_all(env.path("/srv/consul")).unwrap();
    converges(&env);
    assert!(env.path("/srv/dnsmasq.d/consul.conf").is_file());
    assert!(env.path("/srv/consul/interfaces.json").is_file());
    // The building host's /etc/environment is never read into the image.
    std::fs::remove_file(env.path("/etc/environment")).unwrap();
    symlink("/etc/environment", env.path("/etc/environment")).unwrap();
    let run = nodeprep(&env, &["--format", "json", "apply"]);
    run.expect_code(1);
    assert!(run.stdout.contains("symbolic link"), "{}", run.stdout);
    assert_eq!(
        std::fs::read_link(env.path("/etc/environment")).unwrap(),
        Path::new("/etc/environment")
    );
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Item 2: a FIFO (or, as root, a device) where a managed file or the
/// state record belongs fails the run at once with exit 1, naming it, for
/// apply and check alike; nothing is read from it or replaces it.
#[test]
fn special_files_in_managed_positions_fail_at_once() {
    let root = nix::unistd::geteuid().is_root();
    for pos in FILES.iter().chain(&["/var/lib/nodeprep/state.json"]) {
        for kind in ["fifo", "device"] {
            if kind == "device" && !root {
                continue;
            }
            let env = TestEnv::new();
            converges(&env);
            let at = env.path(pos);
            place(&at);
            match kind {
                "fifo" => mkfifo(&at),
                _ => nix::sys::stat::mknod(
                    &at,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o666),
                    nix::sys::stat::makedev(1, 5),
                )
                .unwrap(),
            }
            for args in [&["apply"][..], &["check"], &["--format", "json", "remove"]] {
                let run = nodeprep(&env, args);
                run.expect_code(1);
                let all = format!("{}{}", run.stdout, run.stderr);
                let name = Path::new(pos).file_name().unwrap().to_str().unwrap();
                assert!(
                    all.contains(name) && (all.contains("FIFO") || all.contains("device")),
                    "{pos} {kind} {args:?}:\n{all}"
                );
            }
            assert!(!std::fs::symlink_metadata(&at).unwrap().is_file());
            clear_obstacles(&env.root());
            converges(&env);
        }
    }
}

/// Item 2: the configuration and the gossip key file as a FIFO or a device
/// are refused with 78, at once.
#[test]
fn configuration_inputs_that_are_not_regular_files_exit_78() {
    let env = TestEnv::new();
    let fifo = env.dir.path().join("fifo");
    mkfifo(&fifo);
    for bad in [fifo.as_path(), Path::new("/dev/zero")] {
        for args in [&["apply"][..], &["check"], &["config", "validate"]] {
            let mut cmd = Command::new(BIN);
            cmd.arg("--root")
                .arg(env.root())
                .arg("--config")
                .arg(bad)
                .args(args);
            let run = bounded(cmd, Duration::from_secs(10));
            run.expect_code(78);
            assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
        }
        env.write_config(&format!(
            "[consul]\nbind_addr = \"192.0.2.10\"\nencrypt_file = \"{}\"\n",
            bad.display()
        ));
        let run = nodeprep(&env, &["apply"]);
        run.expect_code(78);
        assert!(
            run.stderr.contains("line 3, column 16") && run.stderr.contains("not a regular file"),
            "{}",
            run.stderr
        );
    }
    assert!(listing(&env.root()).is_empty());
}

/// Item 3: a stdout that fails (a full disk, a closed pipe) never aborts:
/// exit 1, or 78 for a configuration error, and the changes made are in the
/// state record.
#[test]
fn output_errors_exit_cleanly_and_the_record_keeps_the_changes() {
    let env = TestEnv::new();
    let run_to = |args: &[&str], stdout: Stdio| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(env.root())
            .arg("--config")
            .arg(env.config())
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let full = || Stdio::from(std::fs::File::create("/dev/full").unwrap());
    let closed = || {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        Stdio::from(w)
    };
    for (name, out) in [
        ("/dev/full", full as fn() -> Stdio),
        ("closed pipe", closed),
    ] {
        let env_apply = run_to(&["--format", "json", "apply"], out());
        assert_eq!(env_apply.0, Some(1), "{name}: {}", env_apply.1);
        let record = std::fs::read_to_string(env.path("/var/lib/nodeprep/state.json")).unwrap();
        assert!(record.contains("/etc/dnsmasq.d/consul.conf"), "{record}");
        for human in [&["apply"][..], &["check"], &["config", "default"]] {
            assert_eq!(run_to(human, out()).0, Some(1), "{name} {human:?}");
        }
        let saved = std::fs::read_to_string(env.config()).unwrap();
        env.write_config("[consul]\ndns_port = 53\n");
        assert_eq!(
            run_to(&["--format", "json", "check"], out()).0,
            Some(78),
            "{name}"
        );
        env.write_config(&saved);
    }
    // The runs above converged the tree, recorded, and check agrees.
    nodeprep(&env, &["check", "--no-probes"]).expect_code(0);
    let removed = nodeprep(&env, &["--format", "json", "remove"]);
    removed.expect_code(0);
    assert!(!env.path("/etc/dnsmasq.d/consul.conf").exists());
}

/// Item 6: harmful values are refused by every command with 78, naming the
/// key, line and column; nothing is written.
#[test]
fn harmful_values_exit_78_naming_line_column_and_key() {
    for (text, needle) in [
        ("[dnsmasq]\nlisten = []\n", "dnsmasq.listen"),
        ("[dnsmasq]\nlisten = [\"0.0.0.0\"]\n", "dnsmasq.listen"),
        ("[consul]\ndns_port = 53\n", "consul.dns_port"),
        ("[consul]\nhttp_port = 8600\n", "consul.http_port"),
        ("[dnsmasq]\nfile = \"/etc/dnsmasq.d/\"\n", "dnsmasq.file"),
        ("[consul]\nrole = \"server\"\n", "consul.bootstrap_expect"),
    ] {
        let env = TestEnv::new();
        env.write_config(text);
        for args in [&["apply"][..], &["check"], &["config", "validate"]] {
            let run = nodeprep(&env, args);
            run.expect_code(78);
            assert!(
                run.stderr.contains(needle) && run.stderr.contains("line 2, column"),
                "{text:?}: {}",
                run.stderr
            );
        }
        assert!(listing(&env.root()).is_empty());
    }
    let env = TestEnv::new();
    std::fs::write(
        env.config(),
        b"[consul]\nbind_addr = \"192.0.2.10\"\n\xfe\n",
    )
    .unwrap();
    let run = nodeprep(&env, &["config", "validate"]);
    run.expect_code(78);
    assert!(run.stderr.contains("line 3, column 1"), "{}", run.stderr);
}

/// Item 5: directories get their modes whatever the umask, and a config
/// dir the consul user cannot read is drift that apply repairs.
#[test]
fn directory_modes_do_not_follow_the_umask_and_an_unreadable_config_dir_is_drift() {
    let env = TestEnv::new();
    let mut cmd = Command::new(BIN);
    cmd.arg("--root")
        .arg(env.root())
        .arg("--config")
        .arg(env.config())
        .arg("apply");
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
            Ok(())
        });
    }
    bounded(cmd, Duration::from_secs(20)).expect_code(0);
    let mode = |p: &str| std::fs::metadata(env.path(p)).unwrap().mode() & 0o7777;
    for d in DIRS {
        assert_eq!(mode(d), 0o755, "{d}");
    }
    std::fs::set_permissions(
        env.path("/etc/consul.d"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let check = nodeprep(&env, &["--format", "json", "check", "--no-probes"]);
    check.expect_code(2);
    let drift: Vec<_> = check
        .statuses()
        .into_iter()
        .filter(|(_, s)| s == "drift")
        .collect();
    assert_eq!(drift, [("consul-config".to_string(), "drift".to_string())]);
    assert!(check.stdout.contains("cannot read it"), "{}", check.stdout);
    env.converge(&[]).expect_code(0);
    assert_eq!(mode("/etc/consul.d"), 0o755);
    nodeprep(&env, &["check", "--no-probes"]).expect_code(0);
}

/// Item 7: temporary files a killed apply left beside managed files and in
/// the state directory are removed by the next apply (under the lock), and
/// said so; check leaves them.
#[test]
fn stale_temporary_files_are_swept_by_the_next_apply() {
    let env = TestEnv::new();
    converges(&env);
    let stale = [
        "/etc/dnsmasq.d/.nodeprep-1a2b3c",
        "/etc/consul.d/.nodeprep-zz",
        "/etc/.nodeprep-x",
        "/var/lib/nodeprep/.nodeprep-y",
    ];
    for s in stale {
        std::fs::write(env.path(s), "torn").unwrap();
    }
    nodeprep(&env, &["check", "--no-probes"]).expect_code(0);
    assert!(env.path(stale[0]).exists());
    let apply = nodeprep(&env, &["--format", "json", "apply"]);
    apply.expect_code(0);
    for s in stale {
        assert!(!env.path(s).exists(), "{s} stayed");
        assert!(apply.stdout.contains(s), "{s}: {}", apply.stdout);
    }
    assert_eq!(apply.json()["summary"]["changed"], 0);
}

fn strace() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Item 7: SIGTERM in the middle of apply (delivered by strace as the
/// second file is renamed into place) finishes that write, starts nothing
/// else, reports and exits 1 "interrupted"; the next apply converges.
#[test]
fn sigterm_during_apply_finishes_the_write_and_exits_1() {
    if !strace() {
        return common::prerequisite_missing("strace (apt-get install strace)");
    }
    for sig in ["TERM", "INT"] {
        let env = TestEnv::new();
        let mut cmd = Command::new("strace");
        cmd.args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=renameat,renameat2",
        ])
        .arg("-e")
        .arg(format!("inject=renameat,renameat2:signal={sig}:when=3"))
        .arg(BIN)
        .arg("--root")
        .arg(env.root())
        .arg("--config")
        .arg(env.config())
        .args(["--format", "json", "apply"]);
        let run = bounded(cmd, Duration::from_secs(30));
        run.expect_code(1);
        assert!(
            run.stderr.contains(&format!("interrupted by SIG{sig}")),
            "{}",
            run.stderr
        );
        let doc = run.json();
        let failed = doc["summary"]["failed"].as_u64().unwrap();
        assert!(failed >= 1, "{}", run.stdout);
        assert!(run.stdout.contains("not done"), "{}", run.stdout);
        // Every managed file is whole: absent or exactly what apply writes.
        for (p, kind, _) in listing(&env.root()) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".nodeprep-"),
                "temporary file left: {}",
                p.display()
            );
            assert!(kind == "file" || kind.starts_with("dir"), "{}", p.display());
        }
        converges(&env);
    }
}
