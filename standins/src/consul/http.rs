//! Just enough HTTP/1.1 for the stand-in's API: one request per connection
//! (`Connection: close` on every answer), bodies by Content-Length or chunked,
//! `Expect: 100-continue` honoured. A TEST STAND-IN, not an HTTP server to
//! rely on.

use std::io::{self, BufRead, Read, Write};

/// Request line plus headers.
const MAX_HEAD: u64 = 64 * 1024;
const MAX_BODY: usize = 8 * 1024 * 1024;

/// The header every answer carries, so nobody mistakes it for Consul.
pub const STANDIN_HEADER: (&str, &str) = ("X-Consul-Standin", "test stand-in, NOT Consul");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// As sent, without the query (not percent-decoded).
    pub path: String,
    /// After `?`, as sent ("" when none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or timed out) before a request line.
    Closed,
    /// Not a request this server understands: answer this status and text.
    Bad(u16, String),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one request. `cont` is where `100 Continue` goes when the client
/// asks for it.
pub fn read_request(r: &mut impl BufRead, cont: &mut impl Write) -> Result<Request, ReadError> {
    let mut head = r.take(MAX_HEAD);
    let mut line = String::new();
    // Tolerate empty lines before the request line (RFC 9112 2.2).
    loop {
        line.clear();
        if head.read_line(&mut line)? == 0 {
            return Err(ReadError::Closed);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(
            400,
            format!("bad request line {:?}", line.trim_end()),
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(
            505,
            format!("unsupported version {version:?}"),
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let method = method.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if head.read_line(&mut line)? == 0 {
            if head.limit() == 0 {
                return Err(ReadError::Bad(431, "request head too large".into()));
            }
            return Err(ReadError::Bad(
                400,
                "connection closed inside the headers".into(),
            ));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(ReadError::Bad(400, format!("bad header line {l:?}")));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut req = Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match req.header("Content-Length") {
        Some(v) if !chunked => Some(
            v.parse::<usize>()
                .map_err(|_| ReadError::Bad(400, format!("bad Content-Length {v:?}")))?,
        ),
        _ => None,
    };
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(ReadError::Bad(413, "body too large".into()));
    }
    let has_body = chunked || length.is_some_and(|n| n > 0);
    if has_body
        && req
            .header("Expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        cont.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        cont.flush()?;
    }
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(n) = length {
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.take(1024).read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| {
            ReadError::Bad(400, format!("bad chunk size line {:?}", line.trim_end()))
        })?;
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "body too large".into()));
        }
        if size == 0 {
            // Trailers until an empty line.
            loop {
                line.clear();
                if r.take(MAX_HEAD).read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf)?;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// None for an empty body.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(value: &serde_json::Value) -> Response {
        Response {
            status: 200,
            content_type: Some("application/json"),
            body: value.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn empty() -> Response {
        Response {
            status: 200,
            content_type: None,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        let mut body = text.into().into_bytes();
        if !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        Response {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body,
            headers: Vec::new(),
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

pub fn write_response(w: &mut impl Write, resp: &Response) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if let Some(ct) = resp.content_type {
        out.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    out.push_str("Connection: close\r\n");
    out.push_str(&format!("{}: {}\r\n", STANDIN_HEADER.0, STANDIN_HEADER.1));
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    w.write_all(&bytes)?;
    w.flush()
}

/// Percent-decoding as Go's url package does for a path (`plus_is_space`
/// false) or a query component (true). Invalid escapes stay as they are.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b[i] == b'+' {
            b' '
        } else {
            b[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key` in a query string, decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == key).then(|| percent_decode(v, true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn read(raw: &str) -> (Result<Request, ReadError>, Vec<u8>) {
        let mut cont = Vec::new();
        let r = read_request(&mut BufReader::new(raw.as_bytes()), &mut cont);
        (r, cont)
    }

    #[test]
    fn requests() {
        let (r, cont) = read(
            "PUT /v1/agent/check/update/a%3Ab?x=1 HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\n\r\nhello",
        );
        let r = r.unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("PUT", "/v1/agent/check/update/a%3Ab", "x=1")
        );
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("Content-Length"), Some("5"));
        assert!(cont.is_empty());

        let (r, cont) = read(
            "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(r.unwrap().body, b"abcde");
        assert_eq!(cont, b"HTTP/1.1 100 Continue\r\n\r\n");

        let (r, _) = read("GET /v1/agent/self HTTP/1.0\r\n\r\n");
        assert!(r.unwrap().body.is_empty());
        assert!(matches!(read("").0, Err(ReadError::Closed)));
        assert!(matches!(
            read("GARBAGE\r\n\r\n").0,
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            read("GET / SPDY/3\r\n\r\n").0,
            Err(ReadError::Bad(505, _))
        ));
        assert!(matches!(
            read("PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n").0,
            Err(ReadError::Bad(400, _))
        ));
        // A body shorter than announced: an I/O error, not a request.
        assert!(matches!(
            read("PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc").0,
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::json(&serde_json::json!("a:1"))).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Length: 5\r\nConnection: close\r\n"),
            "{text}"
        );
        assert!(text.contains("X-Consul-Standin: test stand-in, NOT Consul\r\n"));
        assert!(text.ends_with("\r\n\r\n\"a:1\""), "{text}");
        let mut out = Vec::new();
        write_response(&mut out, &Response::empty()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 0\r\n") && !text.contains("Content-Type"));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("service%3Aweb", false), "service:web");
        assert_eq!(percent_decode("a+b%2", false), "a+b%2");
        assert_eq!(percent_decode("a+b%20c%zz", true), "a b c%zz");
        assert_eq!(
            query_param("x=1&note=all+good%21&note=2", "note").as_deref(),
            Some("all good!")
        );
        assert_eq!(query_param("note", "note").as_deref(), Some(""));
        assert_eq!(query_param("", "note"), None);
    }
}
