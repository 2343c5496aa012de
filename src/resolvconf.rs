//! Putting a local nameserver first in a plain `/etc/resolv.conf`, and
//! taking it out again. Pure: bytes in, bytes out; every other line (other
//! servers, `search`, `options`, comments) is kept byte for byte.
//!
//! The local server (dnsmasq on 127.0.0.1) comes first so that host
//! processes ask it for the consul domain; the host's own servers stay
//! below it, so that names still resolve if dnsmasq is down (the resolver
//! tries the next server), and dnsmasq itself skips the line naming its own
//! address when it reads this file for its upstreams.

/// The comment nodeprep puts above its line, so that a reader knows why.
pub const COMMENT: &str =
    "# nodeprep: dnsmasq answers the consul domain here and forwards the rest to the servers below";

/// `existing` with `nameserver ADDR` as its first nameserver line.
pub fn merge(existing: &[u8], addr: &str) -> Vec<u8> {
    let ours = format!("nameserver {addr}");
    let lines: Vec<&[u8]> = existing.split_inclusive(|&b| b == b'\n').collect();
    let first = lines.iter().position(|l| server_of(l).is_some());
    if first.is_some_and(|i| server_of(lines[i]) == Some(addr)) {
        let mut out = existing.to_vec();
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        return out;
    }
    let mut out = Vec::with_capacity(existing.len() + ours.len() + COMMENT.len() + 2);
    let insert_at = first.unwrap_or(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if i == insert_at {
            push_ours(&mut out, &ours);
        }
        // A later line naming the same server would only repeat it.
        if server_of(line) == Some(addr) || trimmed(line) == COMMENT.as_bytes() {
            continue;
        }
        out.extend_from_slice(line);
    }
    if insert_at == lines.len() {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        push_ours(&mut out, &ours);
    }
    out
}

/// `existing` without nodeprep's line (and its comment).
pub fn unmerge(existing: &[u8], addr: &str) -> Vec<u8> {
    existing
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| server_of(l) != Some(addr) && trimmed(l) != COMMENT.as_bytes())
        .flatten()
        .copied()
        .collect()
}

fn push_ours(out: &mut Vec<u8>, ours: &str) {
    out.extend_from_slice(COMMENT.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(ours.as_bytes());
    out.push(b'\n');
}

fn trimmed(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b" \t\r\n".contains(b))
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// The address of a `nameserver` line, as glibc's resolver reads it.
fn server_of(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(trimmed(line)).ok()?;
    let mut words = text.split_whitespace();
    (words.next()? == "nameserver").then_some(())?;
    words.next()
}

/// The servers a resolv.conf names, in order (glibc uses the first three).
pub fn servers(content: &[u8]) -> Vec<String> {
    content
        .split(|&b| b == b'\n')
        .filter_map(server_of)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(input: &str) -> String {
        String::from_utf8(merge(input.as_bytes(), "127.0.0.1")).unwrap()
    }

    #[test]
    fn local_server_goes_first_and_everything_else_stays() {
        assert_eq!(
            m("# from DHCP\nsearch example.com\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0\n"),
            format!("# from DHCP\nsearch example.com\n{COMMENT}\nnameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0\n")
        );
        // No server at all: appended.
        assert_eq!(
            m("search example.com"),
            format!("search example.com\n{COMMENT}\nnameserver 127.0.0.1\n")
        );
        // Already first: unchanged.
        let done = "nameserver 127.0.0.1\nnameserver 192.0.2.53\n";
        assert_eq!(m(done), done);
        // Listed, but not first: moved up, not repeated.
        assert_eq!(
            m("nameserver 192.0.2.53\nnameserver 127.0.0.1\n"),
            format!("{COMMENT}\nnameserver 127.0.0.1\nnameserver 192.0.2.53\n")
        );
    }

    #[test]
    fn merge_then_unmerge_gives_the_file_back() {
        for input in [
            "nameserver 192.0.2.53\n",
            "# c\nsearch a.example\nnameserver 192.0.2.53\noptions rotate\n",
            "",
        ] {
            let merged = merge(input.as_bytes(), "127.0.0.1");
            assert_eq!(
                String::from_utf8(unmerge(&merged, "127.0.0.1")).unwrap(),
                input
            );
            assert_eq!(merge(&merged, "127.0.0.1"), merged, "merge is idempotent");
        }
        assert_eq!(
            servers(b"nameserver 127.0.0.1\n# x\nnameserver  192.0.2.53 \n"),
            vec!["127.0.0.1", "192.0.2.53"]
        );
    }
}
