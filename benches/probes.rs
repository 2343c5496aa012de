//! Benchmark (not a test): `check --format json` with and without the live
//! probes on a healthy chain, median of several runs. The chain runs in a
//! private network namespace: real dnsmasq serving nodeprep's file, and the
//! consul stand-in (standins/, NOT Consul) answering HTTP and DNS, so the
//! figures measure nodeprep's side of the probes. Needs root, ip, dnsmasq and
//! the stand-in binary (tests/docker/build-standins.sh); says why not
//! otherwise. Run: `cargo bench --bench probes`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nodeprep");

struct Cleanup(String, Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() {
    let standin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("standins/target/x86_64-unknown-linux-gnu/release/consul-standin");
    if !nix::unistd::geteuid().is_root()
        || !standin.exists()
        || !Path::new("/usr/sbin/dnsmasq").exists()
    {
        println!(
            "check with probes: not measured (needs root, /usr/sbin/dnsmasq and {})",
            standin.display()
        );
        return;
    }
    let runs: usize = std::env::var("NODEPREP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("nodeprep.toml");
    std::fs::write(
        &config,
        format!(
            "[consul]\nbind_addr = \"192.0.2.10\"\nconfig_dir = \"{d}/consul.d\"\nrole = \"server\"\nbootstrap_expect = 1\n[dnsmasq]\nfile = \"{d}/dnsmasq.conf\"\nresolv_file = \"none\"\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let ok = Command::new(BIN)
        .args([
            "--config",
            &config,
            "apply",
            "--only",
            "consul-config,dnsmasq",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let ns = format!("nodeprep-bench-{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    let mut guard = Cleanup(ns.clone(), Vec::new());
    let exec = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]).args(args);
        c
    };
    for args in [
        &["ip", "link", "set", "lo", "up"][..],
        &["ip", "addr", "add", "169.254.1.1/32", "dev", "lo"],
        &["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"],
    ] {
        assert!(exec(args).status().unwrap().success());
    }
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let conf = format!("--conf-file={d}/dnsmasq.conf");
    let pid = format!("--pid-file={d}/dnsmasq.pid");
    guard.1.push(
        exec(&["dnsmasq", "-k", "--user=root", &pid, &conf])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cfg = format!("-config-dir={d}/consul.d");
    let data = format!("-data-dir={d}/data");
    guard.1.push(
        exec(&[standin.to_str().unwrap(), "agent", &cfg, &data])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let probes = ["check", "--only", "consul-http,consul-dns,consul-exposure"];
    let without = ["check", "--no-probes", "--only", "consul-config,dnsmasq"];
    // Wait until the chain answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exec(&[BIN, "--config", &config, "-q"])
        .args(probes)
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the chain did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (label, args) in [
        ("with probes   ", &probes[..]),
        ("without probes", &without[..]),
    ] {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let out = exec(&[BIN, "--config", &config, "--format", "json"])
                .args(args)
                .output()
                .unwrap();
            times.push(start.elapsed());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        times.sort();
        println!(
            "check --format json {label} (healthy chain in a netns, stand-in agent, {runs} runs): median {:.2} ms, p90 {:.2} ms",
            times[runs / 2].as_secs_f64() * 1e3,
            times[runs * 9 / 10].as_secs_f64() * 1e3
        );
    }
}
