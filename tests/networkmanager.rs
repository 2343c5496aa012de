//! The `network` resource's NetworkManager backend against a real
//! NetworkManager (Debian's, 1.42 on bookworm), run by `tests/nm/run-nm.sh`
//! in private network and mount namespaces on a private D-Bus bus. nodeprep
//! runs inside those namespaces with `--only network` and nmcli talks to
//! that NetworkManager.
//!
//! This machine's kernel has no dummy link type, so NetworkManager cannot
//! activate the profile here (it says "Failed to create dummy interface";
//! the Debian VM tier proves activation, reboot and drift). What this tier
//! proves: NetworkManager loads nodeprep's keyfile and reads every setting
//! as meant (nmcli shows them), nodeprep reads NetworkManager's version and
//! refuses `dns.backend = "resolved"` before 1.58.1, a keyfile NetworkManager
//! refuses is an error (nmcli exits 0 there), and `remove` makes
//! NetworkManager forget the profile.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Run, BIN};

/// Live runs take /run/nodeprep.lock: the tests of this binary take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A NetworkManager of its own, ended when dropped.
struct Nm {
    dir: tempfile::TempDir,
    child: Child,
    pid: u32,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Nm {
    /// Starts it, or returns None (after saying why) when this machine
    /// cannot run one.
    fn start() -> Option<Nm> {
        let turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nm/run-nm.sh");
        let mut child = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("run-nm.log")).unwrap())
            .spawn()
            .unwrap();
        let pidfile = dir.path().join("nm.pid");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("run-nm.log")).unwrap_or_default();
                if status.code() == Some(77) {
                    common::prerequisite_missing(log.trim());
                    return None;
                }
                panic!("run-nm.sh exited ({status}):\n{log}");
            }
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                return Some(Nm {
                    dir,
                    child,
                    pid,
                    _turn: turn,
                });
            }
            assert!(Instant::now() < deadline, "NetworkManager did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A command run inside NetworkManager's namespaces, on its bus.
    fn inside(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-n", "-m", "--"])
            .arg(program)
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", self.path("bus.sock").display()),
            );
        cmd
    }

    fn nmcli(&self, args: &[&str]) -> String {
        let out = self.inside("nmcli").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes nodeprep's config: the networkmanager backend, every path in
    /// the temp dir, and `extra` lines.
    fn configure(&self, extra: &str) {
        let d = self.dir.path().display();
        std::fs::write(
            self.path("nodeprep.toml"),
            format!(
                "[network]\nbackend = \"networkmanager\"\n\
                 [networkmanager]\nconnections_dir = \"{d}/conns\"\nconf_dir = \"{d}/confd\"\n\
                 [networkd]\ndir = \"{d}/networkd\"\n\
                 [state]\ndir = \"{d}/state-nodeprep\"\n{extra}"
            ),
        )
        .unwrap();
    }

    /// `nodeprep --format json <args>` inside the namespaces.
    fn nodeprep(&self, args: &[&str]) -> Run {
        let out = self
            .inside(BIN)
            .arg("--config")
            .arg(self.path("nodeprep.toml"))
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    fn keyfile(&self) -> PathBuf {
        self.path("conns/dummy0.nmconnection")
    }
}

impl Drop for Nm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resource(run: &Run, id: &str) -> (String, String, Vec<String>) {
    let doc = run.json();
    let r = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {}", run.stdout))
        .clone();
    (
        r["status"].as_str().unwrap().to_string(),
        r["detail"].as_str().unwrap().to_string(),
        r["actions"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
    )
}

/// nodeprep's profile UUID for dummy0 (as in the keyfile).
fn uuid(nm: &Nm) -> String {
    std::fs::read_to_string(nm.keyfile())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("uuid="))
        .unwrap()
        .to_string()
}

#[test]
fn networkmanager_loads_the_keyfile_as_meant_and_forgets_it_on_remove() {
    let Some(nm) = Nm::start() else { return };
    nm.configure("");
    let plan = nm.nodeprep(&["plan", "--only", "network"]);
    plan.expect_code(2);
    let apply = nm.nodeprep(&["apply", "--only", "network"]);
    let (status, detail, actions) = resource(&apply, "network");
    assert_eq!(
        actions,
        [
            format!("write {} (missing)", nm.keyfile().display()),
            format!("NetworkManager: load {}", nm.keyfile().display()),
        ],
        "{}",
        apply.stdout
    );
    // Activation needs the kernel's dummy link type, which this kernel
    // lacks: NetworkManager's own error is the report's.
    assert_eq!(status, "failed", "{}", apply.stdout);
    assert!(
        detail.contains("Failed to create dummy interface") && detail.contains("connection up"),
        "{detail}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(nm.keyfile()).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, 0));

    // NetworkManager read every setting as nodeprep meant it.
    let uuid = uuid(&nm);
    let shown = nm.nmcli(&[
        "-g",
        "connection.id,connection.type,connection.interface-name,connection.autoconnect,\
         ipv4.method,ipv4.addresses,ipv4.dns,ipv4.dns-search,ipv4.dns-priority,\
         ipv4.never-default,ipv6.method",
        "connection",
        "show",
        "uuid",
        &uuid,
    ]);
    assert_eq!(
        shown.lines().collect::<Vec<_>>(),
        [
            "dummy0",
            "dummy",
            "dummy0",
            "yes",
            "manual",
            "169.254.1.1/32",
            "169.254.1.1",
            "~consul",
            "200",
            "yes",
            "disabled"
        ],
        "{shown}"
    );

    // check: the profile is loaded but not active; the version is read.
    let check = nm.nodeprep(&["check", "--only", "network"]);
    check.expect_code(2);
    let (status, detail, actions) = resource(&check, "network");
    assert_eq!(status, "drift");
    assert_eq!(actions, ["NetworkManager: activate dummy0's profile"]);
    assert!(detail.contains("profile not active"), "{detail}");

    // remove: the keyfile goes and NetworkManager forgets the profile.
    let dry = nm.nodeprep(&["remove", "--dry-run", "--only", "network"]);
    let removed = nm.nodeprep(&["remove", "--only", "network"]);
    common::assert_plan_is_apply(&dry, &removed);
    removed.expect_code(0);
    assert!(!nm.keyfile().exists());
    let profiles = nm.nmcli(&["-t", "-f", "UUID", "connection", "show"]);
    assert!(!profiles.contains(&uuid), "{profiles}");
}

#[test]
fn a_keyfile_networkmanager_refuses_is_an_error_though_nmcli_exits_0() {
    let Some(nm) = Nm::start() else { return };
    nm.configure("");
    nm.nodeprep(&["apply", "--only", "network"]);
    // Someone else's profile loaded from nodeprep's path with loose
    // permissions: NetworkManager will not load the file.
    std::fs::write(nm.keyfile(), "[connection]\nid=x\ntype=dummy\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(nm.keyfile(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = nm
        .inside("nmcli")
        .args(["connection", "load"])
        .arg(nm.keyfile())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nmcli load now fails loudly: update sys::nm"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Could not load file"));
    // nodeprep writes its own file back (0600), and NetworkManager loads it.
    let apply = nm.nodeprep(&["apply", "--only", "network"]);
    let (_, _, actions) = resource(&apply, "network");
    assert_eq!(
        actions[0],
        format!(
            "write {} (content differs, edited copy kept)",
            nm.keyfile().display()
        )
    );
    assert!(actions.contains(&format!("NetworkManager: load {}", nm.keyfile().display())));

    // A connections_dir NetworkManager does not read: nmcli load exits 0,
    // nodeprep sees the profile missing and fails saying so.
    let d = nm.dir.path().display();
    nm.configure("");
    let text = std::fs::read_to_string(nm.path("nodeprep.toml"))
        .unwrap()
        .replace(&format!("{d}/conns\""), &format!("{d}/elsewhere\""));
    std::fs::write(nm.path("nodeprep.toml"), text).unwrap();
    let apply = nm.nodeprep(&["apply", "--only", "network"]);
    apply.expect_code(1);
    let (status, detail, _) = resource(&apply, "network");
    assert_eq!(status, "failed");
    assert!(
        detail.contains("NetworkManager did not load")
            && detail.contains(&format!("{d}/elsewhere/dummy0.nmconnection")),
        "{detail}"
    );
}

#[test]
fn resolved_dns_backend_needs_networkmanager_1_58_1() {
    let Some(nm) = Nm::start() else { return };
    nm.configure("[dns]\nbackend = \"resolved\"\n");
    let version = nm.nmcli(&["-g", "VERSION", "general"]);
    let apply = nm.nodeprep(&["apply", "--only", "network"]);
    apply.expect_code(1);
    let (status, detail, actions) = resource(&apply, "network");
    assert_eq!(status, "failed");
    assert!(actions.is_empty(), "{actions:?}");
    assert!(
        detail.contains("1.58.1") && detail.contains(version.trim()),
        "{detail}"
    );
    assert!(!nm.keyfile().exists());
}

#[test]
fn no_networkmanager_is_a_clear_error() {
    // Outside the namespaces there is no bus and no NetworkManager.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("nodeprep.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nbackend = \"networkmanager\"\n\
             [networkmanager]\nconnections_dir = \"{d}/conns\"\nconf_dir = \"{d}/confd\"\n\
             [state]\ndir = \"{d}/state\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--format", "json", "check", "--only", "network"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={d}/no-bus"))
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect_code(1);
    let (status, detail, _) = resource(&run, "network");
    assert_eq!(status, "failed");
    assert!(
        detail.contains("NetworkManager is not running")
            || detail.contains("nmcli is not installed"),
        "{detail}"
    );
}
