//! The shipped systemd units pass the real `systemd-analyze verify`.
//!
//! verify checks that ExecStart= exists, so it runs against a root tree that
//! holds the built binary at /usr/bin/nodeprep (where the units expect
//! it) and the host's systemd units (for sysinit.target and friends).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: &[&str] = &[
    "nodeprep.service",
    "nodeprep-check.service",
    "nodeprep-check.timer",
];

fn verify(root: &Path, units: &[PathBuf]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let system_units = Path::new("/lib/systemd/system");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
        || !system_units.join("sysinit.target").exists()
    {
        return common::prerequisite_missing(
            "systemd-analyze and the systemd unit files (package systemd)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::copy(common::BIN, root.join("usr/bin/nodeprep")).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(system_units)
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let mut installed = Vec::new();
    for unit in UNITS {
        let dest = root.join("etc/systemd/system").join(unit);
        std::fs::copy(src.join(unit), &dest).unwrap();
        installed.push(dest);
    }
    let (ok, output) = verify(root, &installed);
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );

    // The check can fail: a unit whose ExecStart is not absolute is refused.
    let broken = root.join("etc/systemd/system/broken.service");
    let text = std::fs::read_to_string(&installed[0])
        .unwrap()
        .replace("ExecStart=/usr/bin/nodeprep", "ExecStart=nodeprep-missing");
    std::fs::write(&broken, text).unwrap();
    let (ok, output) = verify(root, &[broken]);
    assert!(!ok, "verify accepted a broken unit:\n{output}");
}
