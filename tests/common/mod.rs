//! Shared helpers for integration tests that run the real nodeprep binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_nodeprep");

/// A temporary tree for `--root` runs, with a config file beside it (outside
/// the tree, so the tree holds only what nodeprep writes).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let env = TestEnv {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(env.root()).unwrap();
        env.write_config("[consul]\nbind_addr = \"192.0.2.10\"\n");
        env
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("nodeprep.toml")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    /// A path inside the tree, given as the host path nodeprep manages.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root().join(host_path.trim_start_matches('/'))
    }

    /// Runs `nodeprep --root <tree> --config <file> <args>`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(self.root())
            .arg("--config")
            .arg(self.config())
            .args(args);
        Run::from(cmd.output().unwrap())
    }

    /// `plan` then `apply` with `extra` arguments (JSON reports), checking
    /// that the apply did exactly what the plan listed; returns the apply.
    pub fn converge(&self, extra: &[&str]) -> Run {
        let plan = self.run(&[&["--format", "json", "plan"][..], extra].concat());
        let apply = self.run(&[&["--format", "json", "apply"][..], extra].concat());
        assert_plan_is_apply(&plan, &apply);
        apply
    }

    /// `remove --dry-run` then `remove` with `extra` arguments, checking
    /// that the remove did exactly what the dry run listed; returns the
    /// remove.
    pub fn remove(&self, extra: &[&str]) -> Run {
        let dry = self.run(&[&["--format", "json", "remove", "--dry-run"][..], extra].concat());
        let remove = self.run(&[&["--format", "json", "remove"][..], extra].concat());
        assert_plan_is_apply(&dry, &remove);
        remove
    }

    /// Every file under the tree with its modification time (ns).
    pub fn snapshot(&self) -> Vec<(PathBuf, i128, Vec<u8>)> {
        let mut out = Vec::new();
        walk(&self.root(), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, i128, Vec<u8>)>) {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            walk(&e.path(), out);
        } else {
            let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
            out.push((e.path(), mtime, std::fs::read(e.path()).unwrap()));
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().expect("nodeprep was killed by a signal"),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// `id -> status` of every resource in a JSON report.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// True when tests that need root, a VM or a namespace must run (CI), false
/// when they may skip with a message (a developer's machine).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails under CI, skips loudly elsewhere. A skipped test is not a pass.
pub fn prerequisite_missing(why: &str) {
    if required() {
        panic!("prerequisite missing under CI=true: {why}");
    }
    // Straight to stderr, past the test harness' capture, so the skip is seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (not a pass): {why}");
}

/// One entry of a tree, as the round-trip tests compare them: path
/// (relative), kind, permission bits, owner, and a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeEntry {
    pub path: PathBuf,
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Vec<u8>,
}

/// Every entry under `root` (directories included), sorted.
pub fn tree(root: &Path) -> Vec<TreeEntry> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let kind = if meta.is_dir() {
                stack.push(e.path());
                "dir"
            } else if meta.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            out.push(TreeEntry {
                path: e.path().strip_prefix(root).unwrap().to_path_buf(),
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                content: if kind == "file" {
                    std::fs::read(e.path()).unwrap()
                } else {
                    Vec::new()
                },
            });
        }
    }
    out.sort();
    out
}

impl Run {
    /// `id -> actions` of every resource of a JSON report that lists any:
    /// the actions planned (check, dry runs) or done (apply, remove).
    pub fn actions(&self) -> Vec<(String, Vec<String>)> {
        self.json()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| {
                let actions: Vec<String> = r["actions"]
                    .as_array()?
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                Some((r["id"].as_str().unwrap().to_string(), actions))
            })
            .collect()
    }
}

/// "plan = apply": the actions a dry run lists are exactly the actions the
/// run that follows reports done, resource by resource. A resource that
/// failed in the run did a prefix of its plan (it stopped at the failing
/// action). `dry` and `real` are JSON reports of e.g. `plan` then `apply`,
/// or `remove --dry-run` then `remove`.
pub fn assert_plan_is_apply(dry: &Run, real: &Run) {
    let planned = dry.actions();
    let done = real.actions();
    let statuses = real.statuses();
    let ids: Vec<&String> = statuses.iter().map(|(id, _)| id).collect();
    let of = |list: &[(String, Vec<String>)], id: &str| {
        list.iter()
            .find(|(i, _)| i == id)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    };
    for id in ids {
        let (p, d) = (of(&planned, id), of(&done, id));
        let status = &statuses.iter().find(|(i, _)| i == id).unwrap().1;
        let ok = if status == "failed" {
            p.starts_with(&d)
        } else {
            p == d
        };
        assert!(
            ok,
            "{id} ({status}): the plan listed {p:?} but the run did {d:?}\nplan:\n{}\nrun:\n{}",
            dry.stdout, real.stdout
        );
    }
}
