//! The stand-in's DNS answers (UDP), hand-encoded: a TEST STAND-IN, NOT
//! Consul's DNS server. One question per query; the answer is one A (or AAAA)
//! record holding the agent's bind address, TTL 0, AA set, for
//!
//! - `<anything>.service.<domain>` (also `<anything>.service.<dc>.<domain>`),
//! - `<node>.node.<domain>` (also `<node>.node.<dc>.<domain>`) where `<node>`
//!   is this agent's node name: the stand-in is a one-node cluster.
//!
//! Such a name asked for another type (AAAA when bind_addr is IPv4, TXT...)
//! gets NOERROR with no answer (NODATA), as real Consul does: an NXDOMAIN
//! would tell a caching resolver (dnsmasq) that the name has no A record
//! either. Every other name: NXDOMAIN. Names compare case-insensitively; the
//! question goes back as received. Sections after the question (EDNS OPT
//! included) are ignored and the answer carries none. A query too short for
//! a header, or a response (QR set), gets no answer at all.

use std::net::IpAddr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;

/// What the stand-in answers for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, no leading or trailing dot (`consul`).
    pub domain: String,
    /// Lowercase.
    pub datacenter: String,
    /// Lowercase.
    pub node: String,
    /// The agent's bind address; None when it is a go-sockaddr template
    /// (matching names then get NODATA).
    pub addr: Option<IpAddr>,
}

/// One query's outcome: the bytes to send back (None: send nothing) and what
/// the record file notes about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub response: Option<Vec<u8>>,
    pub id: u16,
    /// The question's name with a trailing dot, as received ("" when the
    /// question could not be read).
    pub name: String,
    pub qtype: u16,
    pub rcode: u8,
    pub answers: Vec<IpAddr>,
}

/// Normalises a configured domain (`Consul.` -> `consul`).
pub fn normalize_domain(domain: &str) -> String {
    domain.trim_matches('.').to_ascii_lowercase()
}

/// The name of a query type for the record file (`A`, `AAAA`, `TYPE16`...).
pub fn type_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

/// Answers one UDP query message.
pub fn respond(query: &[u8], zone: &Zone) -> Outcome {
    let mut out = Outcome {
        response: None,
        id: 0,
        name: String::new(),
        qtype: 0,
        rcode: FORMERR,
        answers: Vec::new(),
    };
    if query.len() < 12 {
        return out;
    }
    out.id = u16::from_be_bytes([query[0], query[1]]);
    let flags = query[2];
    if flags & 0x80 != 0 {
        // A response: never answer it (no loops between two servers).
        return out;
    }
    let opcode = (flags >> 3) & 0x0f;
    let rd = flags & 0x01;
    let header_only = |rcode: u8| {
        let mut r = Vec::with_capacity(12);
        r.extend_from_slice(&query[0..2]);
        r.push(0x80 | (opcode << 3) | rd);
        r.push(rcode);
        r.extend_from_slice(&[0; 8]);
        r
    };
    if opcode != 0 {
        out.rcode = NOTIMP;
        out.response = Some(header_only(NOTIMP));
        return out;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let Some((labels, end)) = (if qdcount == 1 {
        read_name(query, 12)
    } else {
        None
    }) else {
        out.response = Some(header_only(FORMERR));
        return out;
    };
    if query.len() < end + 4 {
        out.response = Some(header_only(FORMERR));
        return out;
    }
    let question = &query[12..end + 4];
    out.qtype = u16::from_be_bytes([query[end], query[end + 1]]);
    let qclass = u16::from_be_bytes([query[end + 2], query[end + 3]]);
    out.name = labels
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned() + ".")
        .collect::<String>();
    if out.name.is_empty() {
        out.name = ".".into();
    }
    let lower: Vec<String> = labels
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();

    let (in_zone, matched) = lookup(&lower, zone);
    let class_ok = qclass == CLASS_IN || qclass == CLASS_ANY;
    if matched && class_ok {
        out.rcode = NOERROR;
        if let Some(addr) = zone.addr {
            let fits = match addr {
                IpAddr::V4(_) => out.qtype == TYPE_A,
                IpAddr::V6(_) => out.qtype == TYPE_AAAA,
            };
            if fits || out.qtype == TYPE_ANY {
                out.answers.push(addr);
            }
        }
    } else {
        out.rcode = NXDOMAIN;
    }

    let mut r = Vec::with_capacity(question.len() + 12 + 28);
    r.extend_from_slice(&query[0..2]);
    let aa = if in_zone { 0x04 } else { 0 };
    r.push(0x80 | aa | rd); // QR, opcode 0, AA, RD copied
    r.push(out.rcode); // RA 0, Z 0
    r.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    r.extend_from_slice(&(out.answers.len() as u16).to_be_bytes()); // ANCOUNT
    r.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    r.extend_from_slice(question);
    for addr in &out.answers {
        r.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        let (rtype, data): (u16, Vec<u8>) = match addr {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&0u32.to_be_bytes()); // TTL 0, as Consul's default
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    out.response = Some(r);
    out
}

/// Reads an uncompressed name (queries carry no compression pointers);
/// returns its labels and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(Vec<&[u8]>, usize)> {
    let mut labels = Vec::new();
    let mut total = 0;
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels, at));
        }
        if len > 63 {
            return None; // a pointer (0xc0) or a reserved label type
        }
        total += len + 1;
        if total > 255 {
            return None;
        }
        labels.push(msg.get(at..at + len)?);
        at += len;
    }
}

/// (name is in the zone's domain, name exists).
fn lookup(labels: &[String], zone: &Zone) -> (bool, bool) {
    let domain: Vec<&str> = if zone.domain.is_empty() {
        Vec::new()
    } else {
        zone.domain.split('.').collect()
    };
    if labels.len() < domain.len() || !labels.ends_with_strs(&domain) {
        return (false, false);
    }
    let mut rest = &labels[..labels.len() - domain.len()];
    for attempt in 0..2 {
        match rest {
            [_, .., kind] if kind == "service" => return (true, true),
            [node, kind] if kind == "node" && *node == zone.node => return (true, true),
            // `<...>.<dc>.<domain>`: only this agent's datacenter exists.
            [_, _, .., dc] if attempt == 0 && *dc == zone.datacenter => {
                rest = &rest[..rest.len() - 1];
            }
            _ => break,
        }
    }
    (true, false)
}

trait EndsWithStrs {
    fn ends_with_strs(&self, suffix: &[&str]) -> bool;
}

impl EndsWithStrs for [String] {
    fn ends_with_strs(&self, suffix: &[&str]) -> bool {
        self.len() >= suffix.len()
            && self[self.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(a, b)| a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn zone() -> Zone {
        Zone {
            domain: "consul".into(),
            datacenter: "dc1".into(),
            node: "host-a".into(),
            addr: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
        }
    }

    /// A query as dig sends it: RD set, one question, an EDNS OPT record
    /// with a cookie in the additional section.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        // OPT: root name, type 41, udp size 1232, ext rcode/flags 0, rdlen 12 (cookie)
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12]);
        q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        q
    }

    fn question_len(name: &str) -> usize {
        name.trim_end_matches('.').len() + 2 + 4
    }

    #[test]
    fn service_a_record() {
        let q = query(0xbeef, "Web.Service.CONSUL.", TYPE_A);
        let out = respond(&q, &zone());
        assert_eq!(out.rcode, NOERROR);
        assert_eq!(out.name, "Web.Service.CONSUL.");
        assert_eq!(out.answers, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))]);
        let r = out.response.unwrap();
        assert_eq!(&r[0..2], &[0xbe, 0xef]);
        assert_eq!(r[2], 0x80 | 0x04 | 0x01, "QR AA RD");
        assert_eq!(r[3], 0);
        assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        let qlen = question_len("Web.Service.CONSUL.");
        assert_eq!(
            &r[12..12 + qlen],
            &q[12..12 + qlen],
            "question echoed as sent"
        );
        assert_eq!(
            &r[12 + qlen..],
            &[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 10]
        );
    }

    #[test]
    fn names_that_exist() {
        let z = zone();
        for name in [
            "web.service.consul",
            "consul.service.consul.",
            "primary.db.service.consul",
            "_web._tcp.service.consul",
            "web.service.dc1.consul",
            "host-a.node.consul",
            "HOST-A.node.dc1.consul",
        ] {
            let out = respond(&query(1, name, TYPE_A), &z);
            assert_eq!((out.rcode, out.answers.len()), (NOERROR, 1), "{name}");
        }
        for name in [
            "consul",
            "service.consul",
            "web.service.dc2.consul",
            "host-b.node.consul",
            "x.host-a.node.consul",
            "web.service.consul.example",
            "example.com",
            "web.query.consul",
            ".",
        ] {
            let out = respond(&query(1, name, TYPE_A), &z);
            assert_eq!((out.rcode, out.answers.len()), (NXDOMAIN, 0), "{name}");
        }
        // Not in the domain: not authoritative.
        let out = respond(&query(1, "example.com", TYPE_A), &z);
        assert_eq!(out.response.unwrap()[2] & 0x04, 0);
    }

    #[test]
    fn other_types_get_nodata_and_any_gets_the_address() {
        let z = zone();
        let out = respond(&query(7, "web.service.consul", TYPE_AAAA), &z);
        assert_eq!((out.rcode, out.answers.len()), (NOERROR, 0));
        assert_eq!(&out.response.unwrap()[6..8], &[0, 0]);
        assert_eq!(
            respond(&query(7, "web.service.consul", TYPE_ANY), &z)
                .answers
                .len(),
            1
        );
        let v6 = Zone {
            addr: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ..zone()
        };
        let out = respond(&query(7, "web.service.consul", TYPE_AAAA), &v6);
        assert_eq!(out.answers, vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        let r = out.response.unwrap();
        assert_eq!(&r[r.len() - 18..r.len() - 16], &[0, 16]);
        let template = Zone {
            addr: None,
            ..zone()
        };
        let out = respond(&query(7, "web.service.consul", TYPE_A), &template);
        assert_eq!((out.rcode, out.answers.len()), (NOERROR, 0));
    }

    #[test]
    fn other_domains() {
        let z = Zone {
            domain: normalize_domain("Corp.Example."),
            ..zone()
        };
        assert_eq!(z.domain, "corp.example");
        let out = respond(&query(1, "web.service.corp.example", TYPE_A), &z);
        assert_eq!(out.answers.len(), 1);
        let out = respond(&query(1, "web.service.consul", TYPE_A), &z);
        assert_eq!(out.rcode, NXDOMAIN);
    }

    #[test]
    fn malformed_queries() {
        let z = zone();
        // Too short, or a response: silence.
        assert_eq!(respond(&[0; 11], &z).response, None);
        let mut q = query(1, "web.service.consul", TYPE_A);
        q[2] |= 0x80;
        assert_eq!(respond(&q, &z).response, None);
        // Two questions, a compression pointer, a cut-off question: FORMERR.
        let mut q = query(9, "web.service.consul", TYPE_A);
        q[5] = 2;
        let r = respond(&q, &z).response.unwrap();
        assert_eq!((r.len(), r[3], &r[0..2]), (12, FORMERR, &[0u8, 9][..]));
        let mut q = query(9, "a", TYPE_A);
        q[12] = 0xc0;
        assert_eq!(respond(&q, &z).response.unwrap()[3], FORMERR);
        let q = query(9, "web.service.consul", TYPE_A);
        assert_eq!(respond(&q[..20], &z).response.unwrap()[3], FORMERR);
        // Another opcode (NOTIFY): NOTIMP.
        let mut q = query(9, "web.service.consul", TYPE_A);
        q[2] = 4 << 3;
        let r = respond(&q, &z).response.unwrap();
        assert_eq!((r[2], r[3]), (0x80 | (4 << 3), NOTIMP));
    }
}
