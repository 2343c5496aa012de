//! Benchmark (not a test): wall time and peak RSS of a converged `apply` and of
//! `check`, in a temporary `--root` tree, median of several runs of the real
//! release binary. Prints figures; asserts nothing about speed.
//!
//! Run: `cargo bench --bench converge` (NODEPREP_BENCH_RUNS to change the count).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

const BIN: &str = env!("CARGO_BIN_EXE_nodeprep");

fn main() {
    let runs: usize = std::env::var("NODEPREP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(51);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let config = dir.path().join("nodeprep.toml");
    std::fs::write(&config, "[consul]\nbind_addr = \"192.0.2.10\"\n").unwrap();
    let args = |cmd: &str| {
        vec![
            "--root".to_string(),
            root.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--format".into(),
            "json".into(),
            cmd.into(),
        ]
    };
    // Converge once; every measured run below has nothing to change.
    assert!(Command::new(BIN)
        .args(args("apply"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());

    let meta = std::fs::metadata(BIN).unwrap();
    println!("binary: {BIN} ({:.2} MB)", meta.len() as f64 / 1e6);
    for cmd in ["apply", "check"] {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let out = Command::new(BIN)
                .args(args(cmd))
                .stdout(Stdio::piped())
                .output()
                .unwrap();
            times.push(start.elapsed());
            assert!(
                out.status.success(),
                "{cmd} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("\"changed\":0"),
                "{cmd} was not converged"
            );
        }
        times.sort();
        // ru_maxrss of RUSAGE_CHILDREN is the largest peak RSS of any waited-for
        // child so far; apply ran first, so the check figure is max(apply, check).
        let peak_kb = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
        println!(
            "converged {cmd:<5} (--root, {runs} runs): median {:.2} ms, min {:.2} ms, p90 {:.2} ms; peak RSS (max over runs so far) {:.1} MB",
            ms(times[runs / 2]),
            ms(times[0]),
            ms(times[runs * 9 / 10]),
            peak_kb as f64 / 1024.0
        );
    }
    containers(runs);
}

/// A converged live `apply` of the two containers and their config files,
/// against the running dockerd with the test stand-in images (the real images
/// cannot be had here; the work nodeprep does per run is the same: two
/// container inspects, two image inspects, a few file reads). Needs root, a
/// dockerd and the images from tests/docker/build-standins.sh; says why not
/// otherwise.
fn containers(runs: usize) {
    let ready = nix::unistd::geteuid().is_root()
        && [
            "nodeprep-test/consul-standin:1",
            "nodeprep-test/registrator-standin:1",
        ]
        .iter()
        .all(|i| {
            Command::new("docker")
                .args(["image", "inspect", i])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !ready {
        println!("converged apply with containers: not measured (needs root, dockerd and the stand-in images of tests/docker/)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("nodeprep.toml");
    std::fs::write(
        &config,
        format!(
            "[consul]\nconfig_dir = \"{d}/consul.d\"\ndata_dir = \"{d}/data\"\nbind_addr = \"192.0.2.10\"\n\
             image = \"nodeprep-test/consul-standin:1\"\ncontainer = \"nodeprep-bench-consul\"\n\
             [registrator]\nimage = \"nodeprep-test/registrator-standin:1\"\ncontainer = \"nodeprep-bench-registrator\"\n\
             [state]\ndir = \"{d}/state\"\n"
        ),
    )
    .unwrap();
    let args = [
        "--config",
        &config.display().to_string(),
        "--format",
        "json",
        "apply",
        "--only",
        "consul-config,consul,registrator",
    ]
    .map(String::from);
    let first = Instant::now();
    let out = Command::new(BIN).args(&args).output().unwrap();
    let fresh = first.elapsed();
    assert!(
        out.status.success(),
        "fresh apply failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(BIN).args(&args).output().unwrap();
        times.push(start.elapsed());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"changed\":0"),
            "not converged: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    times.sort();
    let _ = Command::new("docker")
        .args([
            "rm",
            "-f",
            "-v",
            "nodeprep-bench-consul",
            "nodeprep-bench-registrator",
        ])
        .stdout(Stdio::null())
        .status();
    println!(
        "converged apply with containers (live, stand-in images, {runs} runs): median {:.2} ms, min {:.2} ms, p90 {:.2} ms; fresh apply (create + start both): {:.0} ms",
        ms(times[runs / 2]),
        ms(times[0]),
        ms(times[runs * 9 / 10]),
        ms(fresh)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
