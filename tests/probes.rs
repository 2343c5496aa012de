//! The live probes and `--report-consul` against real servers in a private
//! network namespace (the host's network is never touched): real dnsmasq
//! serving the file nodeprep rendered, and the consul stand-in (standins/,
//! NOT Consul) answering the HTTP API and DNS questions nodeprep asks. The
//! link address sits on the namespace's loopback: the host kernel has no
//! dummy link type (the VM tiers cover the real link).

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Run;
use netns::{Background, Netns};

const BIND: &str = "192.0.2.10";

/// Temp files: nodeprep's config, the consul config dir, the dnsmasq file.
struct Setup {
    dir: tempfile::TempDir,
    ns: Netns,
}

impl Setup {
    fn new(tag: &str) -> Option<Setup> {
        Setup::with(
            tag,
            "resolv_file = \"none\"\n",
            "[probes]\ntimeout_ms = 1000\n",
            &[],
        )
    }

    /// A setup whose config gets `dnsmasq_extra` lines in `[dnsmasq]`,
    /// `tables` appended (`{d}` replaced by the setup's dir), and `addrs`
    /// on the namespace's loopback besides the link and bind addresses.
    fn with(tag: &str, dnsmasq_extra: &str, tables: &str, addrs: &[&str]) -> Option<Setup> {
        if let Err(why) = prerequisites() {
            common::prerequisite_missing(&why);
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let dead = dir.path().join("no-docker.sock");
        std::fs::write(
            dir.path().join("nodeprep.toml"),
            format!(
                "[consul]\nbind_addr = \"{BIND}\"\nconfig_dir = \"{d}/consul.d\"\n\
                 role = \"server\"\nbootstrap_expect = 1\n\
                 [dnsmasq]\nfile = \"{d}/dnsmasq.conf\"\n{}\
                 [docker]\nsocket = \"{}\"\n\
                 [state]\ndir = \"{d}/state\"\n{}",
                dnsmasq_extra.replace("{d}", &d),
                dead.display(),
                tables.replace("{d}", &d)
            ),
        )
        .unwrap();
        let bind = format!("{BIND}/32");
        let mut lo = vec!["169.254.1.1/32", bind.as_str()];
        lo.extend_from_slice(addrs);
        let s = Setup {
            dir,
            // The link address and the host's routable address (bind_addr),
            // both on the namespace's loopback here.
            ns: Netns::with_lo_addresses(&format!("probe-{tag}"), &lo),
        };
        // nodeprep writes the consul config dir and the dnsmasq file. Live
        // applies take the host-wide lock: this binary's tests take turns.
        static APPLY: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = APPLY.lock().unwrap_or_else(|p| p.into_inner());
        let out = Command::new(common::BIN)
            .args([
                "--config",
                &s.config(),
                "apply",
                "--only",
                "consul-config,dnsmasq",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        Some(s)
    }

    fn config(&self) -> String {
        self.dir.path().join("nodeprep.toml").display().to_string()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn dnsmasq(&self) -> Background {
        let conf = format!("--conf-file={}", self.path("dnsmasq.conf").display());
        let pid = format!("--pid-file={}", self.path("dnsmasq.pid").display());
        let p = self
            .ns
            .spawn(&["dnsmasq", "-k", "--user=root", &pid, &conf]);
        std::thread::sleep(Duration::from_millis(200));
        p
    }

    /// The consul stand-in, reading nodeprep's config dir; extra args such
    /// as `-hang` or `-client=0.0.0.0`. Waits for its ready line.
    fn agent(&self, extra: &[&str]) -> Background {
        let cfg = format!("-config-dir={}", self.path("consul.d").display());
        std::fs::create_dir_all(self.path("data")).unwrap();
        let data = format!("-data-dir={}", self.path("data").display());
        let record = format!("-record={}", self.path("calls.jsonl").display());
        let bin = standin_bin();
        let mut args = vec![bin.to_str().unwrap(), "agent", &cfg, &data, &record];
        args.extend_from_slice(extra);
        let mut p = self.ns.spawn(&args);
        // Wait for the ready line on stdout/stderr.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = String::new();
        let stdout = p.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                out.push_str(&line);
                out.push('\n');
                if line.contains(": ready: ") {
                    return p;
                }
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("consul stand-in exited ({st}): {out}");
            }
        }
        panic!("consul stand-in not ready: {out}");
    }

    fn check(&self, args: &[&str]) -> (Run, Duration) {
        let start = Instant::now();
        let out = self
            .ns
            .command(&[
                common::BIN,
                "--config",
                &self.config(),
                "--format",
                "json",
                "check",
            ])
            .args(args)
            .output()
            .unwrap();
        (Run::from(out), start.elapsed())
    }

    fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn standin_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("standins/target/x86_64-unknown-linux-gnu/release/consul-standin")
}

fn prerequisites() -> Result<(), String> {
    netns::prerequisites(&["dnsmasq", "curl"])?;
    // The stand-in binary is built by the Docker harness script.
    if !standin_bin().exists() {
        let st = Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker/build-standins.sh"),
        )
        .env("NODEPREP_STANDINS_BUILD_ONLY", "1")
        .status()
        .map_err(|e| format!("cannot run build-standins.sh: {e}"))?;
        if !standin_bin().exists() {
            return Err(format!("the consul stand-in did not build ({st})"));
        }
    }
    Ok(())
}

const PROBES: &str = "consul-http,consul-dns,consul-exposure";

fn probe(run: &Run, id: &str) -> (String, String) {
    let doc = run.json();
    let p = doc["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no {id}: {}", run.stdout))
        .clone();
    (
        p["status"].as_str().unwrap().to_string(),
        p["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn healthy_chain_then_each_part_stopped() {
    let Some(s) = Setup::new("chain") else { return };
    let mut dnsmasq = Some(s.dnsmasq());
    let mut agent = Some(s.agent(&[]));
    let (run, took) = s.check(&["--only", PROBES]);
    run.expect_code(0);
    let (st, detail) = probe(&run, "consul-http");
    assert_eq!(st, "ok");
    assert!(
        detail.contains("datacenter dc1") && detail.contains("leader"),
        "{detail}"
    );
    let (st, detail) = probe(&run, "consul-dns");
    assert_eq!(st, "ok", "{detail}");
    assert!(
        detail.contains("169.254.1.1:53 -> 192.0.2.10")
            && detail.contains("127.0.0.1:53 -> 192.0.2.10"),
        "{detail}"
    );
    assert_eq!(probe(&run, "consul-exposure").0, "ok");
    eprintln!("check with probes on a healthy chain: {took:?}");

    // dnsmasq down: DNS fails, HTTP still fine.
    drop(dnsmasq.take());
    let (run, _) = s.check(&["--only", PROBES]);
    run.expect_code(2);
    assert_eq!(probe(&run, "consul-http").0, "ok");
    let (st, detail) = probe(&run, "consul-dns");
    assert_eq!(st, "drift");
    assert!(detail.contains("169.254.1.1:53"), "{detail}");

    // Agent down too: both fail with clear details, within the timeout.
    dnsmasq = Some(s.dnsmasq());
    drop(agent.take());
    let (run, took) = s.check(&["--only", PROBES]);
    run.expect_code(2);
    let (st, detail) = probe(&run, "consul-http");
    assert_eq!(st, "drift");
    assert!(detail.contains("169.254.1.1:8500"), "{detail}");
    assert_eq!(probe(&run, "consul-dns").0, "drift");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(dnsmasq);
}

#[test]
fn api_bound_to_all_addresses_is_exposure_drift() {
    let Some(s) = Setup::new("exposed") else {
        return;
    };
    let _agent = s.agent(&["-client=0.0.0.0"]);
    let (run, _) = s.check(&["--only", "consul-exposure"]);
    run.expect_code(2);
    let (st, detail) = probe(&run, "consul-exposure");
    assert_eq!(st, "drift");
    assert!(detail.contains("exposed on 192.0.2.10:8500"), "{detail}");
}

#[test]
fn a_hung_agent_times_out_and_check_still_ends() {
    let Some(s) = Setup::new("hung") else { return };
    let _dnsmasq = s.dnsmasq();
    let _agent = s.agent(&["-hang"]);
    let (run, took) = s.check(&["--only", PROBES]);
    run.expect_code(2);
    let (st, detail) = probe(&run, "consul-http");
    assert_eq!(st, "drift");
    assert!(
        detail.to_lowercase().contains("timeout") || detail.to_lowercase().contains("timed out"),
        "{detail}"
    );
    assert!(
        took < Duration::from_secs(6),
        "check took {took:?} with a 1 s probe timeout"
    );
}

#[test]
fn report_consul_registers_once_and_updates_with_the_status() {
    let Some(s) = Setup::new("report") else {
        return;
    };
    let mut dnsmasq = Some(s.dnsmasq());
    let _agent = s.agent(&[]);
    // Clean host: passing.
    let (run, _) = s.check(&["--only", PROBES, "--report-consul"]);
    run.expect_code(0);
    // Drifted host (dnsmasq down): warning; no second register.
    drop(dnsmasq.take());
    let (run, _) = s.check(&["--only", PROBES, "--report-consul"]);
    run.expect_code(2);
    // Failing host (dockerd unreachable for the registrator probe): critical.
    let (run, _) = s.check(&[
        "--only",
        &format!("{PROBES},registrator"),
        "--report-consul",
    ]);
    run.expect_code(1);

    let calls = s.calls();
    let puts: Vec<&serde_json::Value> = calls.iter().filter(|c| c["method"] == "PUT").collect();
    let paths: Vec<&str> = puts.iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/v1/agent/service/register",
            "/v1/agent/check/update/nodeprep",
            "/v1/agent/check/update/nodeprep",
            "/v1/agent/check/update/nodeprep"
        ],
        "{calls:#?}"
    );
    let body = |i: usize| -> serde_json::Value {
        serde_json::from_str(puts[i]["body"].as_str().unwrap()).unwrap()
    };
    // A service of its own with the TTL check: a critical audit marks only
    // that service, never the node (which would hide every other service of
    // the host).
    let register = body(0);
    assert_eq!(
        (
            register["Name"].as_str(),
            register["Check"]["CheckID"].as_str(),
            register["Check"]["TTL"].as_str()
        ),
        (Some("nodeprep"), Some("nodeprep"), Some("7200s"))
    );
    let statuses: Vec<String> = (1..4)
        .map(|i| body(i)["Status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["passing", "warning", "critical"]);
    assert!(
        body(2)["Output"]
            .as_str()
            .unwrap()
            .contains("drift consul-dns"),
        "{}",
        body(2)
    );
}

#[test]
fn report_consul_failure_is_an_error() {
    let Some(s) = Setup::new("noreport") else {
        return;
    };
    // No agent at all: the probes drift, and reporting fails on its own.
    let (run, took) = s.check(&["--only", "consul-exposure", "--report-consul"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("cannot report to the Consul agent at http://169.254.1.1:8500"),
        "{}",
        run.stderr
    );
    assert!(took < Duration::from_secs(5));
}

#[test]
fn apply_reports_probe_drift_but_exits_0_when_converged() {
    let Some(s) = Setup::new("applyprobe") else {
        return;
    };
    // No agent and no dnsmasq: the files are converged, the chain is not up.
    let out =
        s.ns.command(&[
            common::BIN,
            "--config",
            &s.config(),
            "--format",
            "json",
            "apply",
            "--only",
            &format!("consul-config,{PROBES}"),
        ])
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect_code(0);
    assert_eq!(probe(&run, "consul-http").0, "drift", "{}", run.stdout);
    assert_eq!(run.json()["summary"]["drift"], 2, "{}", run.stdout);
}

#[test]
fn host_and_upstream_dns_follow_the_host_resolver_and_the_upstreams() {
    // The host's resolver: a resolv.conf naming dnsmasq (127.0.0.1) first.
    // dnsmasq's upstream: a second, real dnsmasq standing in for the site's
    // DNS server at 192.0.2.53, which knows upstream.example.test.
    let Some(s) = Setup::with(
        "hostdns",
        "resolv_file = \"{d}/upstream.conf\"\n",
        "[dns]\nresolv_conf = \"{d}/resolv.conf\"\n\
         [probes]\ntimeout_ms = 1000\nupstream_name = \"upstream.example.test\"\n",
        &["192.0.2.53/32"],
    ) else {
        return;
    };
    // dnsmasq's upstream list as a plain resolv.conf host has it once the
    // resolver resource put dnsmasq first: dnsmasq must skip its own
    // 127.0.0.1 there, not forward to itself.
    std::fs::write(
        s.path("upstream.conf"),
        "nameserver 127.0.0.1\nnameserver 192.0.2.53\n",
    )
    .unwrap();
    std::fs::write(
        s.path("resolv.conf"),
        "nameserver 127.0.0.1\nnameserver 192.0.2.53\n",
    )
    .unwrap();
    let upstream_pid = format!("--pid-file={}", s.path("upstream.pid").display());
    let upstream = || {
        let p = s.ns.spawn(&[
            "dnsmasq",
            "-k",
            "--user=root",
            "--conf-file=/dev/null",
            &upstream_pid,
            "--listen-address=192.0.2.53",
            "--bind-interfaces",
            "--no-resolv",
            "--address=/upstream.example.test/192.0.2.99",
        ]);
        std::thread::sleep(Duration::from_millis(200));
        p
    };
    let mut site = Some(upstream());
    let _dnsmasq = s.dnsmasq();
    let _agent = s.agent(&[]);
    let only = ["--only", "consul-dns,host-dns,upstream-dns"];
    let (run, _) = s.check(&only);
    run.expect_code(0);
    let (st, detail) = probe(&run, "host-dns");
    assert_eq!(st, "ok", "{detail}");
    assert!(detail.contains("host resolver 127.0.0.1"), "{detail}");
    let (st, detail) = probe(&run, "upstream-dns");
    assert_eq!(st, "ok", "{detail}");
    assert!(
        detail.contains("upstream.example.test. -> 192.0.2.99 through 169.254.1.1:53"),
        "{detail}"
    );

    // The site's server down: other names fail, the consul domain does not.
    drop(site.take());
    let (run, _) = s.check(&only);
    run.expect_code(2);
    assert_eq!(probe(&run, "upstream-dns").0, "drift", "{}", run.stdout);
    assert_eq!(probe(&run, "consul-dns").0, "ok", "{}", run.stdout);
    assert_eq!(probe(&run, "host-dns").0, "ok", "{}", run.stdout);

    // A host resolver that never asks dnsmasq does not see the consul domain.
    site = Some(upstream());
    std::fs::write(s.path("resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
    let (run, _) = s.check(&only);
    run.expect_code(2);
    let (st, detail) = probe(&run, "host-dns");
    assert_eq!(st, "drift");
    assert!(detail.contains("192.0.2.53"), "{detail}");
    drop(site);
}

#[test]
fn upstream_dns_is_skipped_without_a_name() {
    let Some(s) = Setup::new("noupstream") else {
        return;
    };
    let (run, _) = s.check(&["--only", "upstream-dns"]);
    run.expect_code(0);
    let (st, detail) = probe(&run, "upstream-dns");
    assert_eq!(st, "skipped");
    assert!(detail.contains("probes.upstream_name"), "{detail}");
}

#[test]
fn a_failed_audit_never_hides_the_hosts_services() {
    let Some(s) = Setup::new("hide") else {
        return;
    };
    let _dnsmasq = s.dnsmasq();
    let _agent = s.agent(&[]);
    let api = |method: &str, path: &str, body: &str| -> String {
        s.ns.run_ok(&[
            "curl",
            "-sS",
            "-X",
            method,
            "--data",
            body,
            &format!("http://169.254.1.1:8500{path}"),
        ])
    };
    // Another service of this host, and the node-level check an older
    // nodeprep registered.
    api(
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "web", "Port": 8080}"#,
    );
    api(
        "PUT",
        "/v1/agent/check/register",
        r#"{"ID": "nodeprep", "Name": "nodeprep", "TTL": "7200s"}"#,
    );
    // A failing audit (dockerd unreachable for the registrator probe).
    let (run, _) = s.check(&[
        "--only",
        &format!("{PROBES},registrator"),
        "--report-consul",
    ]);
    run.expect_code(1);
    let checks: serde_json::Value =
        serde_json::from_str(&api("GET", "/v1/agent/checks", "")).unwrap();
    assert_eq!(checks["nodeprep"]["Status"], "critical", "{checks}");
    assert_eq!(checks["nodeprep"]["ServiceID"], "nodeprep", "{checks}");
    // The host's other service still answers as passing; only nodeprep's
    // own service is critical.
    let web: serde_json::Value =
        serde_json::from_str(&api("GET", "/v1/health/service/web?passing", "")).unwrap();
    assert_eq!(web.as_array().map(Vec::len), Some(1), "{web}");
    let audit: serde_json::Value =
        serde_json::from_str(&api("GET", "/v1/health/service/nodeprep?passing", "")).unwrap();
    assert_eq!(audit.as_array().map(Vec::len), Some(0), "{audit}");
}
