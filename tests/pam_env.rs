//! nodeprep's verdict on /etc/environment against what the real pam_env
//! yields (libpam's pam_env.so, through tests/pam/pam_env_read.py): for
//! hostile files (continuations, CRs, quotes, comments, export, NUL bytes,
//! over-long lines, unset lines, duplicates) and generated ones,
//! - nodeprep reads each file as pam_env does (its model agrees);
//! - after the merge, pam_env yields CONSUL_HTTP_ADDR, and every other
//!   variable exactly as before;
//! - a file nodeprep calls in spec (the merge changes nothing) gives the
//!   session CONSUL_HTTP_ADDR;
//! - after unmerge, every other variable is as before.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use nodeprep::envfile;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

const KEY: &str = "CONSUL_HTTP_ADDR";
const VALUE: &str = "169.254.1.1:8500";

const LINES: &[&[u8]] = &[
    b"CONSUL_HTTP_ADDR=169.254.1.1:8500",
    b"CONSUL_HTTP_ADDR=127.0.0.1:8500",
    b"export CONSUL_HTTP_ADDR=169.254.1.1:8500",
    b"export\tCONSUL_HTTP_ADDR=169.254.1.1:8500",
    b"  CONSUL_HTTP_ADDR=\"169.254.1.1:8500\"",
    b"CONSUL_HTTP_ADDR='169.254.1.1:8500' ",
    b"CONSUL_HTTP_ADDR",
    b"CONSUL_HTTP_ADDR=169.254.1.1:8500 # nodeprep",
    b"CONSUL_HTTP_ADDR=169.254.\\",
    b"A=1",
    b"B=x\\",
    b"B=x\\  \t",
    b"C=\"a b\"",
    b"D='q\"",
    b"PATH=/usr/bin:/bin # comment",
    b"# comment \\",
    b"",
    b"   ",
    b"=bad",
    b"1X=2",
    b"E=\xff\xfe",
    b"F=\0nul",
    b"\0",
    b"G",
    b"H=",
];

const ENDINGS: &[&[u8]] = &[b"\n", b"\n", b"\n", b"\r\n", b""];

fn vars() -> BTreeMap<String, String> {
    BTreeMap::from([(KEY.to_string(), VALUE.to_string())])
}

/// Hand-picked files: each issue's reproduction and its relatives.
fn table() -> Vec<Vec<u8>> {
    let long = [b"L=".as_slice(), &[b'x'; 8189], b"\n"].concat();
    let longer = [b"L=".as_slice(), &[b'x'; 8190], b"\n"].concat();
    vec![
        b"".to_vec(),
        b"A=1\\\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n".to_vec(),
        b"CONSUL_HTTP_ADDR=169.254.1.1:8500\r\n".to_vec(),
        b"A=1\nB=2\\".to_vec(),
        b"A=1\nB=2\\\n\n# c\n".to_vec(),
        b"A=1\\\n# c\n\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nZ=9\n".to_vec(),
        b"\0\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n".to_vec(),
        b"A=1\nB=\0x\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n".to_vec(),
        [long.as_slice(), b"CONSUL_HTTP_ADDR=169.254.1.1:8500\n"].concat(),
        [longer.as_slice(), b"CONSUL_HTTP_ADDR=169.254.1.1:8500\n"].concat(),
        b"CONSUL_HTTP_ADDR=169.254.1.1:8500\nCONSUL_HTTP_ADDR\n".to_vec(),
        b"CONSUL_HTTP_ADDR=169.254.1.1:8500 \n".to_vec(),
        b"export  CONSUL_HTTP_ADDR=169.254.1.1:8500\n".to_vec(),
        b"CONSUL_HTTP_ADDR=\"169.254.1.1:8500\" x\n".to_vec(),
        b"CONSUL_HTTP_ADDR=169.254.\\\n1.1:8500\n".to_vec(),
        b"PATH=\"/usr/local/bin:/usr/bin\"\r\nLANG=C.UTF-8\nLAST=no-newline".to_vec(),
    ]
}

/// Generated files: lines of the kinds above, in any order and ending.
fn generated(count: u32) -> Vec<Vec<u8>> {
    let mut runner = TestRunner::new(Config {
        cases: count,
        ..Config::default()
    });
    let line = (0..LINES.len(), 0..ENDINGS.len());
    let file = prop::collection::vec(line, 0..10);
    let mut out = Vec::new();
    for _ in 0..count {
        let tree = file.new_tree(&mut runner).unwrap();
        let mut bytes = Vec::new();
        for (l, e) in tree.current() {
            bytes.extend_from_slice(LINES[l]);
            bytes.extend_from_slice(ENDINGS[e]);
        }
        out.push(bytes);
    }
    out
}

type Env = BTreeMap<Vec<u8>, Vec<u8>>;

/// The environment the real pam_env builds from each file.
fn real_pam_env(files: &[Vec<u8>]) -> Option<Vec<Env>> {
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.path().join(i.to_string()), f).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pam/pam_env_read.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .env("LC_ALL", "C")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let docs: Vec<BTreeMap<String, String>> = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = |s: &str| s.chars().map(|c| c as u8).collect::<Vec<u8>>();
    Some(
        docs.into_iter()
            .map(|m| m.into_iter().map(|(k, v)| (bytes(&k), bytes(&v))).collect())
            .collect(),
    )
}

fn without_key(env: &Env) -> Env {
    let mut e = env.clone();
    e.remove(KEY.as_bytes());
    e
}

#[test]
fn nodeprep_judges_and_writes_the_environment_as_pam_env_reads_it() {
    if !Path::new("/lib/x86_64-linux-gnu/security/pam_env.so").exists()
        && !Path::new("/usr/lib/x86_64-linux-gnu/security/pam_env.so").exists()
    {
        return common::prerequisite_missing("pam_env.so (apt-get install libpam-modules)");
    }
    let count: u32 = std::env::var("NODEPREP_PAM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut files = table();
    files.extend(generated(count));
    let v = vars();
    let merged: Vec<Vec<u8>> = files.iter().map(|f| envfile::merge(f, &v)).collect();
    let unmerged: Vec<Vec<u8>> = files
        .iter()
        .zip(&merged)
        .map(|(f, m)| envfile::unmerge(m, &v, Some(f)))
        .collect();
    let all: Vec<Vec<u8>> = files
        .iter()
        .chain(&merged)
        .chain(&unmerged)
        .cloned()
        .collect();
    let Some(real) = real_pam_env(&all) else {
        return common::prerequisite_missing(
            "python3 and libpam.so.0 to run tests/pam/pam_env_read.py",
        );
    };
    let n = files.len();
    let (before, after, undone) = (&real[..n], &real[n..2 * n], &real[2 * n..]);
    let mut failures = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let show = String::from_utf8_lossy(f);
        let model = envfile::pam_env(f).env();
        if model != before[i] {
            failures.push(format!(
                "{show:?}: nodeprep reads {model:?}, pam_env {:?}",
                before[i]
            ));
        }
        if after[i].get(KEY.as_bytes()).map(Vec::as_slice) != Some(VALUE.as_bytes()) {
            failures.push(format!(
                "{show:?}: after the merge ({:?}) pam_env yields {:?}",
                String::from_utf8_lossy(&merged[i]),
                after[i].get(KEY.as_bytes())
            ));
        }
        let in_spec = merged[i] == *f;
        if in_spec && before[i].get(KEY.as_bytes()).map(Vec::as_slice) != Some(VALUE.as_bytes()) {
            failures.push(format!(
                "{show:?}: nodeprep says in spec, pam_env disagrees"
            ));
        }
        if without_key(&after[i]) != without_key(&before[i]) {
            failures.push(format!(
                "{show:?}: the merge changed other variables: {:?} -> {:?}",
                before[i], after[i]
            ));
        }
        if without_key(&undone[i]) != without_key(&before[i]) {
            failures.push(format!(
                "{show:?}: unmerge changed other variables: {:?} -> {:?}",
                before[i], undone[i]
            ));
        }
    }
    println!(
        "pam_env comparison: {} files ({} hand-picked, {count} generated), {} failures",
        n,
        n - count as usize,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
