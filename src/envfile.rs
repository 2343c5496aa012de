//! Merging managed variables into `/etc/environment`.
//!
//! The file belongs to the operator and to other tools; nodeprep owns only the
//! lines of the variables it manages. Everything else (comments, blank lines,
//! other variables, odd quoting, CRLF endings, bytes that are not UTF-8) is kept
//! byte for byte. The merge is pure: bytes in, bytes out.

use std::collections::BTreeMap;

/// Returns the file content with every managed variable set exactly once.
///
/// - The first line assigning a managed key is kept as it is when its value
///   already matches (whatever quoting pam_env accepts), else rewritten in place.
/// - Later lines assigning the same key are dropped: pam_env lets the last one
///   win, so a stale duplicate would silently override the managed value.
/// - Keys not present are appended, after a newline if the file lacked one.
pub fn merge(existing: &[u8], vars: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(existing.len() + 64);
    let mut seen: Vec<&str> = Vec::new();
    for line in existing.split_inclusive(|&b| b == b'\n') {
        let managed = assigned_key(line).and_then(|k| vars.get_key_value(k));
        match managed {
            None => out.extend_from_slice(line),
            Some((key, _)) if seen.contains(&key.as_str()) => {}
            Some((key, value)) => {
                seen.push(key);
                if assigned_value(line).as_deref() == Some(value.as_bytes()) {
                    out.extend_from_slice(line);
                    if !line.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                } else {
                    out.extend_from_slice(render_line(key, value).as_bytes());
                }
            }
        }
    }
    for (key, value) in vars {
        if !seen.contains(&key.as_str()) {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(render_line(key, value).as_bytes());
        }
    }
    out
}

/// Takes nodeprep's variables out of `existing`: every line that assigns a
/// managed key the managed value goes. Where `original` (the file as it was
/// before nodeprep first changed it) assigned that key itself, its lines for
/// the key come back in place of the first removed one. Every other byte is
/// kept.
pub fn unmerge(
    existing: &[u8],
    vars: &BTreeMap<String, String>,
    original: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(existing.len());
    let mut restored: Vec<&str> = Vec::new();
    for line in existing.split_inclusive(|&b| b == b'\n') {
        let managed = assigned_key(line)
            .and_then(|k| vars.get_key_value(k))
            .filter(|(_, v)| assigned_value(line).as_deref() == Some(v.as_bytes()));
        let Some((key, _)) = managed else {
            out.extend_from_slice(line);
            continue;
        };
        if restored.contains(&key.as_str()) {
            continue;
        }
        restored.push(key);
        for old in original
            .unwrap_or_default()
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| assigned_key(l) == Some(key.as_str()))
        {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(old);
        }
    }
    out
}

/// One `KEY=value` line. Values are validated by the config (no quotes,
/// backslashes, '$' or control characters), so double quotes are only needed
/// to keep spaces.
pub fn render_line(key: &str, value: &str) -> String {
    if value.contains([' ', '\t']) {
        format!("{key}=\"{value}\"\n")
    } else {
        format!("{key}={value}\n")
    }
}

/// The key a line assigns, as pam_env reads it: optional leading blanks, an
/// optional `export `, then `KEY=`. Comments and anything else yield `None`.
fn assigned_key(line: &[u8]) -> Option<&str> {
    let rest = strip_export(trim_start(line));
    let eq = rest.iter().position(|&b| b == b'=')?;
    let key = std::str::from_utf8(&rest[..eq]).ok()?;
    let valid = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(key)
}

/// The value a line assigns, with one pair of matching surrounding quotes
/// removed and the line ending stripped.
fn assigned_value(line: &[u8]) -> Option<Vec<u8>> {
    let rest = strip_export(trim_start(line));
    let eq = rest.iter().position(|&b| b == b'=')?;
    let mut v = &rest[eq + 1..];
    while let Some(stripped) = v.strip_suffix(b"\n").or_else(|| v.strip_suffix(b"\r")) {
        v = stripped;
    }
    for q in [b'"', b'\''] {
        if v.len() >= 2 && v[0] == q && v[v.len() - 1] == q {
            v = &v[1..v.len() - 1];
            break;
        }
    }
    Some(v.to_vec())
}

fn trim_start(line: &[u8]) -> &[u8] {
    let n = line
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &line[n..]
}

fn strip_export(line: &[u8]) -> &[u8] {
    match line.strip_prefix(b"export") {
        Some(rest) if rest.first().is_some_and(|&b| b == b' ' || b == b'\t') => trim_start(rest),
        _ => line,
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
                b"  export\tCONSUL_HTTP_ADDR='169.254.1.1:8500'\n",
                HTTP,
                b"  export\tCONSUL_HTTP_ADDR='169.254.1.1:8500'\n",
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
                "CRLF lines of others kept; a matching CRLF line too",
                b"A=1\r\nCONSUL_HTTP_ADDR=169.254.1.1:8500\r\n",
                HTTP,
                b"A=1\r\nCONSUL_HTTP_ADDR=169.254.1.1:8500\r\n",
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
        }
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
