//! Real dnsmasq running the file nodeprep rendered, inside a private network
//! namespace (the host's network is never touched). Proves the file's
//! behaviour, not just its text:
//! - dnsmasq accepts it;
//! - it forwards the consul domain to <link address>#<dns_port>, answering on
//!   both 169.254.1.1:53 and 127.0.0.1:53;
//! - bind-dynamic: dnsmasq started before the link address existed binds it
//!   when it appears (dummy0 can come up after dnsmasq at boot), and it starts
//!   beside another listener on 127.0.0.53:53 (systemd-resolved's stub).
//!
//! The responder on port 8600 is a second dnsmasq answering for the consul
//! domain: a stand-in for the Consul agent's DNS interface.

mod common;
#[path = "common/netns.rs"]
mod netns;

use netns::Netns;
use std::time::{Duration, Instant};

/// `dig +short` answers in the namespace, retried until `want` or the
/// deadline.
fn dig_until(ns: &Netns, server: &str, name: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns
            .command(&[
                "dig",
                &format!("@{server}"),
                name,
                "A",
                "+short",
                "+time=1",
                "+tries=1",
            ])
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if answer == want || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dnsmasq_forwards_the_consul_domain_through_nodeprep_file() {
    if let Err(why) = netns::prerequisites(&["dnsmasq", "dig"]) {
        return common::prerequisite_missing(&why);
    }
    let env = common::TestEnv::new();
    env.run(&["apply", "--only", "dnsmasq"]).expect_code(0);
    let conf = env.path("/etc/dnsmasq.d/consul.conf");
    let tmp = env.dir.path();
    let pid = |n: &str| format!("--pid-file={}", tmp.join(n).display());

    let ns = Netns::new("dns");
    // Something already on 127.0.0.53:53, as systemd-resolved's stub would be.
    let _stub = ns.spawn(&[
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        "--user=root",
        &pid("stub.pid"),
        "--listen-address=127.0.0.53",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--address=/stub.test/10.9.9.9",
    ]);
    // nodeprep's dnsmasq starts BEFORE 169.254.1.1 exists anywhere.
    let mut main = ns.spawn(&[
        "dnsmasq",
        "-k",
        "--user=root",
        &pid("main.pid"),
        &format!("--conf-file={}", conf.display()),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(Some(status)) = main.child.try_wait() {
        let mut err = String::new();
        std::io::Read::read_to_string(main.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("dnsmasq refused nodeprep's file ({status}): {err}");
    }
    // The link address appears (here on lo: the host kernel has no dummy type).
    ns.add_lo_address("169.254.1.1/32");
    // Stand-in for the Consul agent's DNS interface on 169.254.1.1:8600.
    let _agent = ns.spawn(&[
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        "--user=root",
        &pid("agent.pid"),
        "--port=8600",
        "--listen-address=169.254.1.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--address=/consul/10.1.2.3",
    ]);

    assert_eq!(
        dig_until(&ns, "169.254.1.1", "web.service.consul", "10.1.2.3"),
        "10.1.2.3"
    );
    assert_eq!(
        dig_until(&ns, "127.0.0.1", "web.service.consul", "10.1.2.3"),
        "10.1.2.3"
    );
    // The stub's address is still its own: nodeprep's dnsmasq did not take it.
    assert_eq!(
        dig_until(&ns, "127.0.0.53", "x.stub.test", "10.9.9.9"),
        "10.9.9.9"
    );
}
