//! `nodeprep apply --only link` on the HOST kernel, which has no dummy link
//! type (ARCHITECTURE.md, Tests): nodeprep must fail (exit 1) and say why,
//! naming EOPNOTSUPP and what to do (load the `dummy` module or use a kernel
//! built with CONFIG_DUMMY).
//!
//! Everything runs inside a private network namespace (and a private mount
//! namespace, so that /sys can be remounted to show that namespace's links)
//! made by util-linux `unshare` in a child process: the host's own links are
//! never touched. The test first proves, in that same namespace, that the
//! kernel really refuses `ip link add probe0 type dummy`; on a kernel with
//! the dummy type this test has nothing to check.
//!
//! Needs root, `unshare` and iproute2's `ip`. When a prerequisite is missing
//! it FAILS under `CI=true`; elsewhere it prints `SKIPPED: <why>` on stderr
//! and returns (a skipped test has not passed).

mod common;

use std::fs;
use std::process::{Command, Stdio};

fn prerequisite_missing(test: &str, why: &str) {
    common::prerequisite_missing(&format!("{test}: {why}"));
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs inside `unshare --net --mount`. $1 is the nodeprep binary, $2 a
/// directory for the results (one file per item, read by the test).
const NETNS_SCRIPT: &str = r#"
set -u
np=$1
out=$2
# The new mount namespace must not propagate anything back to the host.
mount --make-rprivate / || exit 90
# sysfs shows the links of the network namespace of whoever mounts it: a
# fresh mount makes /sys/class/net agree with this namespace.
mount -t sysfs sysfs /sys || exit 91
# Make sure the embedded default config applies even if this host has one.
if [ -d /etc/nodeprep ]; then mount -t tmpfs tmpfs /etc/nodeprep || exit 92; fi
# nodeprep's record goes to a tmpfs, never into the host's /var/lib.
mount -t tmpfs tmpfs /var/lib || exit 93
ip link set lo up

# Does this kernel lack the dummy type? (The whole point of the test.)
rc=0
ip link add probe0 type dummy >"$out/probe.out" 2>&1 || rc=$?
echo "$rc" >"$out/probe.rc"
ip link del probe0 >/dev/null 2>&1

rc=0
"$np" apply --only link >"$out/human.out" 2>"$out/human.err" || rc=$?
echo "$rc" >"$out/human.rc"

rc=0
"$np" --format json apply --only link >"$out/json.out" 2>"$out/json.err" || rc=$?
echo "$rc" >"$out/json.rc"

ls /sys/class/net >"$out/links.after"
exit 0
"#;

#[test]
fn apply_link_on_kernel_without_dummy_says_eopnotsupp() {
    const TEST: &str = "apply_link_on_kernel_without_dummy_says_eopnotsupp";
    let nodeprep = env!("CARGO_BIN_EXE_nodeprep");

    match effective_uid() {
        Some(0) => {}
        Some(uid) => {
            return prerequisite_missing(TEST, &format!("needs root (running as uid {uid})"))
        }
        None => return prerequisite_missing(TEST, "cannot read the uid from /proc/self/status"),
    }
    for (tool, arg) in [("unshare", "--version"), ("ip", "-V")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return prerequisite_missing(TEST, &format!("`{tool}` not available"));
        }
    }
    let usable = Command::new("unshare")
        .args(["--net", "--mount", "true"])
        .stdin(Stdio::null())
        .output();
    match usable {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return prerequisite_missing(
                TEST,
                &format!(
                    "cannot create network/mount namespaces: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            )
        }
        Err(e) => return prerequisite_missing(TEST, &format!("cannot run unshare: {e}")),
    }

    let results = tempfile::tempdir().expect("tempdir");
    let out = results.path();
    let o = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--",
            "sh",
            "-c",
            NETNS_SCRIPT,
            "netns-test",
        ])
        .arg(nodeprep)
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    assert!(
        o.status.success(),
        "namespace script failed ({}; 90/91/92 = mount setup):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let rc = |name: &str| -> i32 {
        read(name)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no exit status in {name}"))
    };

    // 1. The premise: this kernel has no dummy link type.
    if rc("probe.rc") == 0 {
        return prerequisite_missing(
            TEST,
            "this kernel CAN create dummy links (`ip link add probe0 type dummy` worked in the \
             namespace), so the EOPNOTSUPP path cannot be exercised here",
        );
    }
    let probe = read("probe.out");
    assert!(
        probe.contains("Unknown device type") || probe.contains("not supported"),
        "the dummy probe failed for another reason than a missing link type: {probe}"
    );

    // 2. Human output: exit 1, EOPNOTSUPP and what to do about it.
    let human = format!("{}{}", read("human.out"), read("human.err"));
    let transcript = |what: &str, rc_file: &str, text: &str| {
        format!("{what} exited {}; output:\n{text}", read(rc_file).trim())
    };
    assert_eq!(
        rc("human.rc"),
        1,
        "{}",
        transcript("nodeprep apply --only link", "human.rc", &human)
    );
    assert_mentions_eopnotsupp(&human, "human output");

    // 3. JSON output: exit 1, one line, link failed, same explanation.
    let json = read("json.out");
    let json_all = format!("{json}{}", read("json.err"));
    let ctx = transcript(
        "nodeprep --format json apply --only link",
        "json.rc",
        &json_all,
    );
    assert_eq!(rc("json.rc"), 1, "{ctx}");
    assert_eq!(
        json.lines().count(),
        1,
        "expected one line of JSON on stdout; {ctx}"
    );
    let line = json.trim_end();
    assert!(
        line.starts_with('{') && line.ends_with('}'),
        "stdout is not a JSON object; {ctx}"
    );
    assert!(
        resource_status(line, "link").as_deref() == Some("failed"),
        "link status is not \"failed\"; {ctx}"
    );
    assert_mentions_eopnotsupp(&json_all, "JSON output");

    // 4. Nothing half-made: no dummy0 appeared in the namespace.
    let links = read("links.after");
    assert!(
        !links.lines().any(|l| l.trim() == "dummy0"),
        "a dummy0 link exists after the failed apply: {links}"
    );
}

fn assert_mentions_eopnotsupp(text: &str, what: &str) {
    assert!(
        text.contains("EOPNOTSUPP"),
        "{what} does not mention EOPNOTSUPP:\n{text}"
    );
    assert!(
        text.contains("CONFIG_DUMMY") || (text.contains("dummy") && text.contains("module")),
        "{what} does not tell to load the dummy module / use CONFIG_DUMMY:\n{text}"
    );
}

/// The status of resource `id` in nodeprep's compact JSON, found as the
/// innermost `{...}` that holds `"id":"<id>"` (key order does not matter).
fn resource_status(json: &str, id: &str) -> Option<String> {
    let key = format!("\"id\":\"{id}\"");
    let at = json.find(&key)?;
    let start = json[..at].rfind('{')?;
    let end = at + json[at..].find('}')?;
    let obj = &json[start..=end];
    let s = obj.find("\"status\":\"")? + "\"status\":\"".len();
    let len = obj[s..].find('"')?;
    Some(obj[s..s + len].to_string())
}

#[test]
fn resource_status_parsing() {
    let j = r#"{"command":"apply","summary":{"ok":0,"failed":1},"resources":[{"id":"networkd","status":"ok"},{"id":"link","status":"failed","detail":"x"}]}"#;
    assert_eq!(resource_status(j, "link").as_deref(), Some("failed"));
    assert_eq!(resource_status(j, "networkd").as_deref(), Some("ok"));
    assert_eq!(resource_status(j, "dnsmasq"), None);
}
