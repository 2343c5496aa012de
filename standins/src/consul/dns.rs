//! The stand-in's DNS answers (UDP), hand-encoded: a TEST STAND-IN, NOT
//! Consul's DNS server. One question per query. It answers from the agent's
//! catalog ([`Lookup`], implemented by the API state), like Consul's
//! `agent/dns.go`:
//!
//! - `<node>.node[.<dc>].<domain>`: A (or AAAA) with the node's address;
//! - `[<tag>.]<service>.service[.<dc>].<domain>` and RFC 2782
//!   `_<service>._<tag>.service[.<dc>].<domain>` (`_tcp` means no tag):
//!   A records with each healthy instance's service address, or the node's
//!   address when the service has none; SRV records (priority 1, weight 1,
//!   the service's port) whose target is `<node>.node.<dc>.<domain>.` when
//!   the instance uses the node's address, else
//!   `<hex address>.addr.<dc>.<domain>.`, with the target's A record in the
//!   additional section;
//! - `<hex>.addr[.<dc>].<domain>`: the address it encodes.
//!
//! "Healthy" is Consul's default (`dns_config.only_passing = false`): an
//! instance with any critical check, its own or a node check, is left out.
//! A service with no healthy instance, an unknown node, any other name in
//! the domain: NXDOMAIN (authoritative). A name that exists asked for another
//! type (AAAA when the address is IPv4, TXT...): NOERROR with no answer
//! (NODATA), so a caching resolver such as dnsmasq does not conclude that
//! the A record is missing too. Names outside the domain: NXDOMAIN, not
//! authoritative. TTL 0 (Consul's default). Names compare
//! case-insensitively; the question goes back as received. Sections after
//! the question (EDNS OPT included) are ignored and the answer carries none.
//! A query too short for a header, or a response (QR set), gets no answer.

use std::net::IpAddr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;

/// The names the stand-in answers for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, no leading or trailing dot (`consul`).
    pub domain: String,
    /// Lowercase.
    pub datacenter: String,
}

/// One healthy service instance, as DNS needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub node_addr: Option<IpAddr>,
    /// The service's own address (None: it has none, or it is not an IP).
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// Where answers come from (the agent's catalog).
pub trait Lookup {
    /// Healthy instances of `service` (matched case-insensitively),
    /// carrying `tag` when given.
    fn service(&self, service: &str, tag: Option<&str>) -> Vec<Target>;
    /// The address of node `node` (case-insensitive), if it exists.
    fn node(&self, node: &str) -> Option<Option<IpAddr>>;
}

/// A record of the answer or additional section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An address for the question's name (owner = the question).
    Addr(IpAddr),
    /// SRV for the question's name.
    Srv { port: u16, target: String },
    /// An address for another name (additional section).
    Extra { name: String, addr: IpAddr },
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
    /// Answer records, for the record file: addresses as text, SRV as
    /// `port target`.
    pub answers: Vec<String>,
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

/// Consul's `.addr.` encoding of an address: 8 hex digits for IPv4, 32 for
/// IPv6.
pub fn hex_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(a) => a.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn parse_hex_addr(s: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    match bytes?.as_slice() {
        b if b.len() == 4 && s.len() == 8 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        b if b.len() == 16 && s.len() == 32 => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// What a name in the zone resolves to: None = NXDOMAIN.
fn resolve(labels: &[String], zone: &Zone, qtype: u16, cat: &dyn Lookup) -> Option<Vec<Record>> {
    let domain: Vec<&str> = if zone.domain.is_empty() {
        Vec::new()
    } else {
        zone.domain.split('.').collect()
    };
    let mut rest = &labels[..labels.len() - domain.len()];
    // `<...>.<dc>`: only this agent's datacenter exists.
    if let [head @ .., kind, dc] = rest {
        if *dc == zone.datacenter && matches!(kind.as_str(), "node" | "service" | "addr") {
            rest = &rest[..head.len() + 1];
        }
    }
    let suffix = format!("{}.{}.", zone.datacenter, zone.domain);
    let addr_record = |ip: IpAddr| match (ip, qtype) {
        (IpAddr::V4(_), TYPE_A | TYPE_ANY) | (IpAddr::V6(_), TYPE_AAAA | TYPE_ANY) => {
            vec![Record::Addr(ip)]
        }
        _ => Vec::new(),
    };
    match rest {
        [node, kind] if kind == "node" => {
            let addr = cat.node(node)?;
            Some(addr.map(addr_record).unwrap_or_default())
        }
        [hex, kind] if kind == "addr" => parse_hex_addr(hex).map(addr_record),
        [.., kind] if kind == "service" => {
            let (service, tag) = match rest {
                [s, _] => (s.as_str(), None),
                [a, b, _] if a.starts_with('_') && b.starts_with('_') => {
                    let tag = &b[1..];
                    (&a[1..], (tag != "tcp").then_some(tag))
                }
                [t, s, _] if !t.starts_with('_') => (s.as_str(), Some(t.as_str())),
                _ => return None,
            };
            let targets = cat.service(service, tag);
            if targets.is_empty() {
                return None;
            }
            let mut out = Vec::new();
            for t in &targets {
                let ip = t.addr.or(t.node_addr);
                match qtype {
                    TYPE_SRV => {
                        let own = t.addr.is_none() || t.addr == t.node_addr;
                        let target = match (own, ip) {
                            (false, Some(ip)) => format!("{}.addr.{suffix}", hex_addr(ip)),
                            _ => format!("{}.node.{suffix}", t.node),
                        };
                        out.push(Record::Srv {
                            port: t.port,
                            target: target.clone(),
                        });
                        if let Some(ip) = ip {
                            out.push(Record::Extra {
                                name: target,
                                addr: ip,
                            });
                        }
                    }
                    _ => {
                        if let Some(ip) = ip {
                            out.extend(addr_record(ip));
                        }
                    }
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// Answers one UDP query message.
pub fn respond(query: &[u8], zone: &Zone, cat: &dyn Lookup) -> Outcome {
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

    let domain: Vec<&str> = if zone.domain.is_empty() {
        Vec::new()
    } else {
        zone.domain.split('.').collect()
    };
    let in_zone = lower.len() >= domain.len() && lower.ends_with_strs(&domain);
    let class_ok = qclass == CLASS_IN || qclass == CLASS_ANY;
    let records = if in_zone && class_ok {
        resolve(&lower, zone, out.qtype, cat)
    } else {
        None
    };
    out.rcode = if records.is_some() { NOERROR } else { NXDOMAIN };
    let records = records.unwrap_or_default();
    let (answers, extras): (Vec<&Record>, Vec<&Record>) = records
        .iter()
        .partition(|r| !matches!(r, Record::Extra { .. }));
    out.answers = answers
        .iter()
        .map(|r| match r {
            Record::Addr(ip) => ip.to_string(),
            Record::Srv { port, target } => format!("{port} {target}"),
            Record::Extra { .. } => unreachable!(),
        })
        .collect();

    let mut r = Vec::with_capacity(question.len() + 12 + 64);
    r.extend_from_slice(&query[0..2]);
    let aa = if in_zone { 0x04 } else { 0 };
    r.push(0x80 | aa | rd); // QR, opcode 0, AA, RD copied
    r.push(out.rcode); // RA 0, Z 0
    r.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes()); // ANCOUNT
    r.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    r.extend_from_slice(&(extras.len() as u16).to_be_bytes()); // ARCOUNT
    r.extend_from_slice(question);
    for rec in answers.iter().chain(extras.iter()) {
        match rec {
            Record::Addr(ip) => {
                r.extend_from_slice(&[0xc0, 0x0c]); // the question's name
                push_addr(&mut r, *ip);
            }
            Record::Srv { port, target } => {
                r.extend_from_slice(&[0xc0, 0x0c]);
                r.extend_from_slice(&TYPE_SRV.to_be_bytes());
                r.extend_from_slice(&CLASS_IN.to_be_bytes());
                r.extend_from_slice(&0u32.to_be_bytes());
                let name = encode_name(target);
                r.extend_from_slice(&((6 + name.len()) as u16).to_be_bytes());
                r.extend_from_slice(&1u16.to_be_bytes()); // priority
                r.extend_from_slice(&1u16.to_be_bytes()); // weight
                r.extend_from_slice(&port.to_be_bytes());
                r.extend_from_slice(&name);
            }
            Record::Extra { name, addr } => {
                r.extend_from_slice(&encode_name(name));
                push_addr(&mut r, *addr);
            }
        }
    }
    out.response = Some(r);
    out
}

/// TYPE, CLASS, TTL 0 (Consul's default), RDLENGTH, RDATA of an address.
fn push_addr(r: &mut Vec<u8>, ip: IpAddr) {
    let (rtype, data): (u16, Vec<u8>) = match ip {
        IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
        IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
    };
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&CLASS_IN.to_be_bytes());
    r.extend_from_slice(&0u32.to_be_bytes());
    r.extend_from_slice(&(data.len() as u16).to_be_bytes());
    r.extend_from_slice(&data);
}

/// A dotted name as uncompressed labels.
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
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
        }
    }

    const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    /// A catalog with node host-a (192.0.2.10): `web` (no address, port
    /// 80, tag v1), `db` (address 192.0.2.99, port 5432), `consul`.
    struct Cat;

    impl Lookup for Cat {
        fn service(&self, service: &str, tag: Option<&str>) -> Vec<Target> {
            let t = |addr, port, tags: &[&str]| {
                if tag.is_some_and(|x| !tags.contains(&x)) {
                    return Vec::new();
                }
                vec![Target {
                    node: "host-a".into(),
                    node_addr: Some(NODE_IP),
                    addr,
                    port,
                }]
            };
            match service.to_ascii_lowercase().as_str() {
                "web" => t(None, 80, &["v1"]),
                "db" => t(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))), 5432, &[]),
                "consul" => t(None, 8300, &[]),
                _ => Vec::new(),
            }
        }
        fn node(&self, node: &str) -> Option<Option<IpAddr>> {
            node.eq_ignore_ascii_case("host-a").then_some(Some(NODE_IP))
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

    fn ask(name: &str, qtype: u16) -> Outcome {
        respond(&query(1, name, qtype), &zone(), &Cat)
    }

    fn question_len(name: &str) -> usize {
        name.trim_end_matches('.').len() + 2 + 4
    }

    #[test]
    fn registered_service_a_record() {
        let q = query(0xbeef, "Web.Service.CONSUL.", TYPE_A);
        let out = respond(&q, &zone(), &Cat);
        assert_eq!(out.rcode, NOERROR);
        assert_eq!(out.name, "Web.Service.CONSUL.");
        assert_eq!(
            out.answers,
            ["192.0.2.10"],
            "no service address: the node's"
        );
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
        assert_eq!(
            ask("db.service.consul", TYPE_A).answers,
            ["192.0.2.99"],
            "the service's own address"
        );
    }

    #[test]
    fn srv_records_name_the_node_or_the_address_and_add_its_a_record() {
        let out = ask("web.service.consul", TYPE_SRV);
        assert_eq!(out.answers, ["80 host-a.node.dc1.consul."]);
        let r = out.response.unwrap();
        assert_eq!(&r[6..12], &[0, 1, 0, 0, 0, 1], "one answer, one additional");
        let qlen = question_len("web.service.consul");
        let srv = &r[12 + qlen..];
        assert_eq!(&srv[..4], &[0xc0, 0x0c, 0, 33]);
        assert_eq!(
            &srv[12..18],
            &[0, 1, 0, 1, 0, 80],
            "priority 1, weight 1, port 80"
        );
        let target = encode_name("host-a.node.dc1.consul.");
        assert_eq!(&srv[18..18 + target.len()], &target[..]);
        let extra = &srv[18 + target.len()..];
        assert_eq!(&extra[..target.len()], &target[..]);
        assert_eq!(
            &extra[target.len()..],
            &[0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 10]
        );
        // A service with its own address: Consul's .addr. target.
        assert_eq!(
            ask("_db._tcp.service.dc1.consul", TYPE_SRV).answers,
            ["5432 c0000263.addr.dc1.consul."]
        );
        assert_eq!(
            ask("c0000263.addr.dc1.consul", TYPE_A).answers,
            ["192.0.2.99"]
        );
    }

    #[test]
    fn unregistered_names_are_nxdomain() {
        for name in [
            "web.service.consul",
            "consul.service.consul.",
            "v1.web.service.consul",
            "_web._v1.service.consul",
            "_web._tcp.service.consul",
            "web.service.dc1.consul",
            "host-a.node.consul",
            "HOST-A.node.dc1.consul",
        ] {
            let out = ask(name, TYPE_A);
            assert_eq!((out.rcode, out.answers.len()), (NOERROR, 1), "{name}");
        }
        for name in [
            "nope.service.consul",
            "v2.web.service.consul",
            "consul",
            "service.consul",
            "a.b.web.service.consul",
            "web.service.dc2.consul",
            "host-b.node.consul",
            "x.host-a.node.consul",
            "web.service.consul.example",
            "example.com",
            "web.query.consul",
            "zz.addr.consul",
            ".",
        ] {
            let out = ask(name, TYPE_A);
            assert_eq!((out.rcode, out.answers.len()), (NXDOMAIN, 0), "{name}");
        }
        // Not in the domain: not authoritative.
        assert_eq!(ask("example.com", TYPE_A).response.unwrap()[2] & 0x04, 0);
        assert_eq!(
            ask("nope.service.consul", TYPE_A).response.unwrap()[2] & 0x04,
            0x04
        );
    }

    #[test]
    fn other_types_get_nodata_and_any_gets_the_address() {
        let out = ask("web.service.consul", TYPE_AAAA);
        assert_eq!((out.rcode, out.answers.len()), (NOERROR, 0));
        assert_eq!(&out.response.unwrap()[6..8], &[0, 0]);
        assert_eq!(ask("web.service.consul", TYPE_ANY).answers.len(), 1);
        assert_eq!(ask("host-a.node.consul", 16).rcode, NOERROR);
        assert_eq!(hex_addr(IpAddr::V6(Ipv6Addr::LOCALHOST)).len(), 32);
        assert_eq!(
            parse_hex_addr(&hex_addr(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }

    #[test]
    fn other_domains() {
        let z = Zone {
            domain: normalize_domain("Corp.Example."),
            ..zone()
        };
        assert_eq!(z.domain, "corp.example");
        let out = respond(&query(1, "web.service.corp.example", TYPE_A), &z, &Cat);
        assert_eq!(out.answers.len(), 1);
        let out = respond(&query(1, "web.service.consul", TYPE_A), &z, &Cat);
        assert_eq!(out.rcode, NXDOMAIN);
    }

    #[test]
    fn malformed_queries() {
        let z = zone();
        // Too short, or a response: silence.
        assert_eq!(respond(&[0; 11], &z, &Cat).response, None);
        let mut q = query(1, "web.service.consul", TYPE_A);
        q[2] |= 0x80;
        assert_eq!(respond(&q, &z, &Cat).response, None);
        // Two questions, a compression pointer, a cut-off question: FORMERR.
        let mut q = query(9, "web.service.consul", TYPE_A);
        q[5] = 2;
        let r = respond(&q, &z, &Cat).response.unwrap();
        assert_eq!((r.len(), r[3], &r[0..2]), (12, FORMERR, &[0u8, 9][..]));
        let mut q = query(9, "a", TYPE_A);
        q[12] = 0xc0;
        assert_eq!(respond(&q, &z, &Cat).response.unwrap()[3], FORMERR);
        let q = query(9, "web.service.consul", TYPE_A);
        assert_eq!(respond(&q[..20], &z, &Cat).response.unwrap()[3], FORMERR);
        // Another opcode (NOTIFY): NOTIMP.
        let mut q = query(9, "web.service.consul", TYPE_A);
        q[2] = 4 << 3;
        let r = respond(&q, &z, &Cat).response.unwrap();
        assert_eq!((r[2], r[3]), (0x80 | (4 << 3), NOTIMP));
    }
}
