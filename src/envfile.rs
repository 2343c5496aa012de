//! Merging managed variables into `/etc/environment`, judged as pam_env
//! reads the file.
//!
//! The file belongs to the operator and to other tools; nodeprep owns only the
//! lines of the variables it manages. Everything else (comments, blank lines,
//! other variables, odd quoting, CRLF endings, bytes that are not UTF-8) is kept
//! byte for byte. The merge is pure: bytes in, bytes out.
//!
//! What counts is what a login session gets, so the file is read the way
//! pam_env reads it ([`pam_env`], after Linux-PAM 1.5's `_assemble_line`
//! and `_parse_env_file`): a line ending in `\` continues onto the next,
//! comment and blank lines in between included; `#` ends a line; a CR is
//! part of the value; `export ` (one space) is skipped; one pair of quotes
//! is taken off; a line of 8 KiB or more, a NUL byte or a continuation
//! running into the end of the file stops pam_env reading. A managed line
//! is "in spec" only when pam_env would yield its value from it.

use std::collections::BTreeMap;

/// pam_env's line buffer (`BUF_SIZE`).
const BUF_SIZE: usize = 8192;

/// What one logical line (physical lines joined by `\`) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Blank, comment, or a line pam_env ignores (a bad key).
    Nothing,
    /// `KEY=value`: sets the variable.
    Set(Vec<u8>, Vec<u8>),
    /// `KEY` alone: unsets it.
    Unset(Vec<u8>),
}

/// One logical line: where it is in the file and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    pub start: usize,
    pub end: usize,
    pub effect: Effect,
}

/// The file as pam_env reads it: its logical lines in order, and where
/// pam_env stops reading (an offset from which nothing counts), if it does
/// before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub lines: Vec<Logical>,
    pub stop: Option<usize>,
}

impl Parsed {
    /// The environment pam_env builds from the file, in order of the
    /// assignments it applies.
    pub fn env(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut env = BTreeMap::new();
        for l in &self.lines {
            match &l.effect {
                Effect::Set(k, v) => {
                    env.insert(k.clone(), v.clone());
                }
                Effect::Unset(k) => {
                    env.remove(k);
                }
                Effect::Nothing => {}
            }
        }
        env
    }
}

/// Reads `file` as pam_env (readenv=1) does.
pub fn pam_env(file: &[u8]) -> Parsed {
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        let start = pos;
        let mut buf: Vec<u8> = Vec::new();
        // One call of _assemble_line.
        let complete = loop {
            if buf.len() >= BUF_SIZE {
                return Parsed {
                    lines,
                    stop: Some(start),
                };
            }
            if pos == file.len() {
                if buf.is_empty() {
                    return Parsed { lines, stop: None };
                }
                // A continuation running into the end of the file.
                return Parsed {
                    lines,
                    stop: Some(start),
                };
            }
            let line_end = file[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(file.len(), |i| pos + i + 1);
            let line = &file[pos..line_end];
            // fgets reads at most BUF_SIZE - used - 1 bytes.
            let room = BUF_SIZE - buf.len() - 1;
            let has_newline = line.ends_with(b"\n");
            let eof = !has_newline && line.len() < room;
            if line.len() > room || (!has_newline && !eof) {
                return Parsed {
                    lines,
                    stop: Some(start),
                };
            }
            pos = line_end;
            if line[0] == 0 {
                return Parsed {
                    lines,
                    stop: Some(start),
                };
            }
            let c = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
            if !c.ends_with(b"\n") && !eof {
                return Parsed {
                    lines,
                    stop: Some(start),
                };
            }
            let ws = c
                .iter()
                .take_while(|&&b| matches!(b, b' ' | b'\n' | b'\t'))
                .count();
            let rest = &c[ws..];
            if rest.is_empty() || rest[0] == b'#' {
                // Nothing in this line; outside a continuation it is a
                // logical line of its own.
                if buf.is_empty() {
                    break false;
                }
                continue;
            }
            if let Some(h) = rest.iter().position(|&b| b == b'#') {
                buf.extend_from_slice(&c[..ws + h]);
                break true;
            }
            let last = rest
                .iter()
                .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\n'))
                .unwrap_or(0);
            if rest[last] == b'\\' {
                buf.extend_from_slice(&c[..ws + last]);
                continue;
            }
            buf.extend_from_slice(c);
            break true;
        };
        let effect = if complete {
            parse_line(&buf)
        } else {
            Effect::Nothing
        };
        lines.push(Logical {
            start,
            end: pos,
            effect,
        });
    }
}

/// `_parse_env_file` on one assembled line.
fn parse_line(buf: &[u8]) -> Effect {
    let ws = buf
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\n' | b'\t'))
        .count();
    let mut key = &buf[ws..];
    if key.first() == Some(&b'#') {
        return Effect::Nothing;
    }
    if let Some(rest) = key.strip_prefix(b"export ") {
        key = rest;
    }
    let end = key
        .iter()
        .position(|&b| matches!(b, b'\n' | b'#' | 0))
        .unwrap_or(key.len());
    let key = &key[..end];
    if key.first() == Some(&b'=') {
        return Effect::Nothing;
    }
    let eq = key.iter().position(|&b| b == b'=').unwrap_or(key.len());
    if !key[..eq]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Effect::Nothing;
    }
    if eq == key.len() {
        return if eq == 0 {
            Effect::Nothing
        } else {
            Effect::Unset(key.to_vec())
        };
    }
    let name = key[..eq].to_vec();
    let value = &key[eq + 1..];
    let value = match value.first() {
        Some(b'"' | b'\'') => {
            // Every quote but a last one is kept; the opening one goes.
            let v = &value[1..];
            v.iter()
                .enumerate()
                .filter(|&(t, &b)| !matches!(b, b'"' | b'\'') || t + 1 < v.len())
                .map(|(_, &b)| b)
                .collect()
        }
        _ => value.to_vec(),
    };
    Effect::Set(name, value)
}

/// The managed key a logical line sets or unsets, if any.
fn managed_key<'v>(
    effect: &Effect,
    vars: &'v BTreeMap<String, String>,
) -> Option<(&'v String, &'v String)> {
    let key = match effect {
        Effect::Set(k, _) | Effect::Unset(k) => k,
        Effect::Nothing => return None,
    };
    vars.get_key_value(std::str::from_utf8(key).ok()?)
}

/// Returns the content with every managed variable set exactly once, so
/// that pam_env yields each managed value.
///
/// - The first logical line setting (or unsetting) a managed key is kept as
///   it is when pam_env reads the managed value from it, else rewritten in
///   place.
/// - Later lines for the same key are dropped: pam_env lets the last one
///   win, so a stale duplicate would silently override the managed value.
/// - Keys not present are appended, after a newline if the file lacked one.
/// - When pam_env would still not see a managed value (a foreign line
///   continuing into the end of the file, a NUL byte or an over-long line
///   before it), the managed lines go to the top of the file instead.
pub fn merge(existing: &[u8], vars: &BTreeMap<String, String>) -> Vec<u8> {
    let parsed = pam_env(existing);
    let mut out = Vec::with_capacity(existing.len() + 64);
    let mut seen: Vec<&str> = Vec::new();
    let mut foreign: Vec<&[u8]> = Vec::new();
    for l in &parsed.lines {
        let bytes = &existing[l.start..l.end];
        let Some((key, value)) = managed_key(&l.effect, vars) else {
            out.extend_from_slice(bytes);
            foreign.push(bytes);
            continue;
        };
        if seen.contains(&key.as_str()) {
            continue;
        }
        seen.push(key);
        if l.effect == Effect::Set(key.as_bytes().to_vec(), value.as_bytes().to_vec()) {
            out.extend_from_slice(bytes);
            if !bytes.ends_with(b"\n") {
                out.push(b'\n');
            }
        } else {
            out.extend_from_slice(render_line(key, value).as_bytes());
        }
    }
    let tail = &existing[parsed.lines.last().map_or(0, |l| l.end)..];
    out.extend_from_slice(tail);
    for (key, value) in vars {
        if !seen.contains(&key.as_str()) {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(render_line(key, value).as_bytes());
        }
    }
    if yields(&out, vars) {
        return out;
    }
    // Something before or around the managed lines keeps pam_env from
    // reading them: put them first, where nothing precedes them.
    let mut top = Vec::with_capacity(existing.len() + 64);
    for (key, value) in vars {
        top.extend_from_slice(render_line(key, value).as_bytes());
    }
    for bytes in foreign {
        top.extend_from_slice(bytes);
    }
    top.extend_from_slice(tail);
    top
}

/// True when pam_env reads every managed value from `file`.
pub fn yields(file: &[u8], vars: &BTreeMap<String, String>) -> bool {
    let env = pam_env(file).env();
    vars.iter()
        .all(|(k, v)| env.get(k.as_bytes()).map(Vec::as_slice) == Some(v.as_bytes()))
}

/// Takes nodeprep's variables out of `existing`: every logical line from
/// which pam_env reads a managed key's managed value goes. Where `original`
/// (the file as it was before nodeprep first changed it) set or unset that
/// key itself, its lines for the key come back in place of the first
/// removed one. Every other byte is kept.
pub fn unmerge(
    existing: &[u8],
    vars: &BTreeMap<String, String>,
    original: Option<&[u8]>,
) -> Vec<u8> {
    let parsed = pam_env(existing);
    let from_original = original.map(|o| (o, pam_env(o)));
    let mut out = Vec::with_capacity(existing.len());
    let mut restored: Vec<&str> = Vec::new();
    for l in &parsed.lines {
        let bytes = &existing[l.start..l.end];
        let managed = managed_key(&l.effect, vars)
            .filter(|(k, v)| l.effect == Effect::Set(k.as_bytes().to_vec(), v.as_bytes().to_vec()));
        let Some((key, _)) = managed else {
            out.extend_from_slice(bytes);
            continue;
        };
        if restored.contains(&key.as_str()) {
            continue;
        }
        restored.push(key);
        let Some((original, parsed)) = &from_original else {
            continue;
        };
        for old in parsed
            .lines
            .iter()
            .filter(|o| managed_key(&o.effect, vars).is_some_and(|(k, _)| k == key))
        {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            // A last line without a newline may hold a NUL byte pam_env
            // stopped at; followed by more lines it would stop pam_env
            // reading the file, so only what pam_env read comes back.
            let line = &original[old.start..old.end];
            let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
            out.extend_from_slice(line);
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    out.extend_from_slice(&existing[parsed.lines.last().map_or(0, |l| l.end)..]);
    out
}

/// One `KEY=value` line. Values are validated by the config (no quotes,
/// backslashes, '$', '#' or control characters), so double quotes are only
/// needed to keep spaces.
pub fn render_line(key: &str, value: &str) -> String {
    if value.contains([' ', '\t']) {
        format!("{key}=\"{value}\"\n")
    } else {
        format!("{key}={value}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (name, existing file, managed vars, expected file)
    type Case<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a str)], &'a [u8]);

    const HTTP: &[(&str, &str)] = &[("CONSUL_HTTP_ADDR", "169.254.1.1:8500")];

    #[test]
    fn table() {
        let cases: &[Case] = &[
            ("empty file", b"", HTTP, b"CONSUL_HTTP_ADDR=169.254.1.1:8500\n"),
            (
                "other lines kept, key appended",
                b"PATH=\"/usr/local/bin:/usr/bin\"\n# comment\n\nLANG=C.UTF-8\n",
                HTTP,
                b"PATH=\"/usr/local/bin:/usr/bin\"\n# comment\n\nLANG=C.UTF-8\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "no trailing newline",
                b"LANG=C",
                HTTP,
                b"LANG=C\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "stale value rewritten in place",
                b"A=1\nCONSUL_HTTP_ADDR=127.0.0.1:8500\nB=2\n",
                HTTP,
                b"A=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nB=2\n",
            ),
            (
                "duplicates resolved to the first position",
                b"CONSUL_HTTP_ADDR=old\nX=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nexport CONSUL_HTTP_ADDR=other\n",
                HTTP,
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\nX=1\n",
            ),
            (
                "matching quoted value kept verbatim",
                b"CONSUL_HTTP_ADDR=\"169.254.1.1:8500\"\n",
                HTTP,
                b"CONSUL_HTTP_ADDR=\"169.254.1.1:8500\"\n",
            ),
            (
                "export prefix and leading blanks recognised",
                b"  export CONSUL_HTTP_ADDR='169.254.1.1:8500'\n",
                HTTP,
                b"  export CONSUL_HTTP_ADDR='169.254.1.1:8500'\n",
            ),
            (
                "export and a tab is no assignment for pam_env",
                b"export\tCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
                HTTP,
                b"export\tCONSUL_HTTP_ADDR=169.254.1.1:8500\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "a foreign line ending in a backslash swallows the next line",
                b"A=x\\\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
                HTTP,
                b"A=x\\\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "a continuation through blank and comment lines",
                b"A=x\\  \n\n# c\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nB=1\n",
                HTTP,
                b"A=x\\  \n\n# c\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nB=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "a continuation into the end of the file: managed line first",
                b"A=1\nB=x\\",
                HTTP,
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\nA=1\nB=x\\",
            ),
            (
                "a NUL byte stops pam_env: managed line first",
                b"A=1\n\0junk\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
                HTTP,
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\nA=1\n\0junk\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "a comment after the value changes it",
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500 # ours\n",
                HTTP,
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "unsetting the key is a managed line too",
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\nCONSUL_HTTP_ADDR\n",
                HTTP,
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "a managed value split by a continuation is still in spec",
                b"CONSUL_HTTP_ADDR=169.254.\\\n1.1:8500\n",
                HTTP,
                b"CONSUL_HTTP_ADDR=169.254.\\\n1.1:8500\n",
            ),
            (
                "commented assignment is not the key",
                b"#CONSUL_HTTP_ADDR=1.2.3.4:8500\n",
                HTTP,
                b"#CONSUL_HTTP_ADDR=1.2.3.4:8500\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "a longer key with the same prefix is someone else's",
                b"CONSUL_HTTP_ADDR_BACKUP=x\nCONSUL_HTTP_ADDRX=y\n",
                HTTP,
                b"CONSUL_HTTP_ADDR_BACKUP=x\nCONSUL_HTTP_ADDRX=y\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "spaces around = are not pam_env syntax: left alone",
                b"CONSUL_HTTP_ADDR = x\n",
                HTTP,
                b"CONSUL_HTTP_ADDR = x\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "CRLF lines of others kept; a CR on the managed line is part of its value",
                b"A=1\r\nCONSUL_HTTP_ADDR=169.254.1.1:8500\r\n",
                HTTP,
                b"A=1\r\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "bytes that are not UTF-8 survive",
                b"GREETING=gr\xfc\xdf\n\xff\xfe garbage\n",
                HTTP,
                b"GREETING=gr\xfc\xdf\n\xff\xfe garbage\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "managed key as last line without newline gets one",
                b"A=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500",
                HTTP,
                b"A=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "several managed keys, in key order when appended",
                b"Z=1\n",
                &[("CONSUL_RPC_ADDR", "169.254.1.1:8400"), ("CONSUL_HTTP_ADDR", "169.254.1.1:8500")],
                b"Z=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nCONSUL_RPC_ADDR=169.254.1.1:8400\n",
            ),
            (
                "value with a space is quoted",
                b"",
                &[("GREETING", "hello world")],
                b"GREETING=\"hello world\"\n",
            ),
            (
                "only blank lines",
                b"\n\n",
                HTTP,
                b"\n\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
            (
                "an equals sign inside someone else's value",
                b"OPTS=a=b=c\n",
                HTTP,
                b"OPTS=a=b=c\nCONSUL_HTTP_ADDR=169.254.1.1:8500\n",
            ),
        ];
        for (name, input, vs, expected) in cases {
            let got = merge(input, &vars(vs));
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "case: {name}"
            );
            assert_eq!(&got, expected, "case: {name} (bytes)");
            // Idempotent: merging the result again changes nothing.
            assert_eq!(merge(&got, &vars(vs)), got, "case: {name} (second merge)");
            // And pam_env reads every managed value from it.
            assert!(yields(&got, &vars(vs)), "case: {name} (pam_env)");
        }
    }

    #[test]
    fn pam_env_reading() {
        let env = |f: &[u8]| {
            pam_env(f)
                .env()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let kv = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            env(b"A=1\nB=\"two words\"\nC='x\"y'\n"),
            kv(&[("A", "1"), ("B", "two words"), ("C", "x\"y")])
        );
        assert_eq!(env(b"A=x\\\n  y # c\n"), kv(&[("A", "x  y ")]));
        assert_eq!(env(b"A=1\r\n"), kv(&[("A", "1\r")]));
        assert_eq!(env(b"A=1\nA\n1B=2\n-C=3\n=4\n"), kv(&[("1B", "2")]));
        assert_eq!(env(b"A=1\nB=2\\"), kv(&[("A", "1")]));
        assert_eq!(env(b"A=1\nB=2\\\n\n"), kv(&[("A", "1")]));
        assert_eq!(env(b"A=1\nB=\0\nC=3\n"), kv(&[("A", "1")]));
        assert_eq!(env(b"A=1\nB=2\0"), kv(&[("A", "1"), ("B", "2")]));
        let long = [b"A=".as_slice(), &[b'x'; 8200], b"\nB=1\n"].concat();
        assert_eq!(env(&long), kv(&[]));
    }

    #[test]
    fn unmerge_takes_out_only_the_managed_lines() {
        let v = vars(HTTP);
        /// (name, existing file, original, expected file)
        type Unmerge<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, &'a [u8]);
        let cases: &[Unmerge] = &[
            (
                "managed line removed, the rest kept",
                b"A=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nB=2\n",
                None,
                b"A=1\nB=2\n",
            ),
            (
                "someone else's value for the key stays",
                b"CONSUL_HTTP_ADDR=127.0.0.1:8500\n",
                None,
                b"CONSUL_HTTP_ADDR=127.0.0.1:8500\n",
            ),
            (
                "the original's lines for the key come back in place",
                b"A=1\nCONSUL_HTTP_ADDR=169.254.1.1:8500\nB=2\n",
                Some(b"A=1\nCONSUL_HTTP_ADDR=old\nB=2\nCONSUL_HTTP_ADDR=older\n"),
                b"A=1\nCONSUL_HTTP_ADDR=old\nCONSUL_HTTP_ADDR=older\nB=2\n",
            ),
            (
                "an original without the key adds nothing",
                b"CONSUL_HTTP_ADDR=169.254.1.1:8500\n",
                Some(b"X=1\n"),
                b"",
            ),
        ];
        for (name, input, original, expected) in cases {
            let got = unmerge(input, &v, *original);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "case: {name}"
            );
        }
        // merge then unmerge gives the file back for files that end in a
        // newline and did not assign the key.
        for input in [&b""[..], b"PATH=/bin\n# c\n", b"\xff odd\r\n"] {
            assert_eq!(unmerge(&merge(input, &v), &v, Some(input)), input);
        }
    }
}
