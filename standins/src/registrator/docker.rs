//! Just enough of the Docker Engine API over its unix socket for the
//! registrator STAND-IN: `GET /_ping`, `GET /containers/json`,
//! `GET /containers/<id>/json` and the streaming `GET /events`.
//! Hand-written HTTP/1.1 (one request per connection, `Connection: close`),
//! bodies by Content-Length, chunked transfer encoding or to EOF.
//!
//! Paths carry no API version: the engine then answers with its own (Debian
//! bookworm's dockerd 20.10 speaks 1.41 at most and refuses newer versions in
//! the path; newer engines refuse versions older than their minimum), and
//! every field read here has been in the API since long before either.

use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A Docker engine reached through a unix socket.
#[derive(Debug, Clone)]
pub struct Docker {
    pub socket: PathBuf,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// A response's status line and headers.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// Reads a status line and headers.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Head> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("the engine closed the connection before answering"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("not an HTTP status line: {:?}", line.trim_end())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Ok(Head { status, headers });
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// Decodes a chunked body as it arrives (trailers are skipped).
pub struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunked body cut off",
                ));
            }
            let size = line.trim_end().split(';').next().unwrap_or("").trim();
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size line {:?}", line.trim_end())))?;
            if self.left == 0 {
                // Trailers until an empty line.
                loop {
                    line.clear();
                    if self.inner.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunk cut off",
            ));
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

/// A response body reader of the right kind.
fn body(head: &Head, r: BufReader<UnixStream>) -> io::Result<Box<dyn Read + Send>> {
    if head.chunked() {
        return Ok(Box::new(Chunked::new(r)));
    }
    match head.header("Content-Length") {
        Some(n) => {
            let n: u64 = n
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {n:?}")))?;
            Ok(Box::new(r.take(n)))
        }
        None => Ok(Box::new(r)),
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved kept).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Docker {
    pub fn new(socket: &Path) -> Docker {
        Docker {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends `GET path` and returns the head and a reader of the body.
    /// `timeout` bounds every read (None: a stream that may idle).
    pub fn open(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> io::Result<(Head, Box<dyn Read + Send>)> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: registrator-standin\r\nConnection: close\r\n\r\n"
        )?;
        let mut r = BufReader::new(s);
        let head = read_head(&mut r)?;
        let body = body(&head, r)?;
        Ok((head, body))
    }

    /// `GET path`: the whole body; Err on a transport error.
    pub fn get(&self, path: &str) -> io::Result<(u16, Vec<u8>)> {
        let (head, mut body) = self.open(path, Some(Duration::from_secs(10)))?;
        let mut out = Vec::new();
        body.read_to_end(&mut out)?;
        Ok((head.status, out))
    }

    /// `GET path` answered 200 with JSON.
    pub fn get_json(&self, path: &str) -> io::Result<Value> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            return Err(bad(format!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| bad(format!("GET {path}: not JSON: {e}")))
    }

    /// `/_ping` answered `OK`.
    pub fn ping(&self) -> io::Result<()> {
        let (status, body) = self.get("/_ping")?;
        if status == 200 && body == b"OK" {
            Ok(())
        } else {
            Err(bad(format!(
                "/_ping answered HTTP {status} {:?}",
                String::from_utf8_lossy(&body)
            )))
        }
    }

    /// Running containers (`GET /containers/json`): their IDs.
    pub fn list_containers(&self) -> io::Result<Vec<String>> {
        let v = self.get_json("/containers/json")?;
        Ok(v.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /containers/<id>/json`; Ok(None) when there is no such
    /// container (404).
    pub fn inspect(&self, id: &str) -> io::Result<Option<Value>> {
        let path = format!("/containers/{}/json", query_escape(id));
        let (status, body) = self.get(&path)?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| bad(format!("GET {path}: not JSON: {e}"))),
            404 => Ok(None),
            _ => Err(bad(format!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ))),
        }
    }

    /// Opens the event stream of container `start` and `die` events, as
    /// go-dockerclient's AddEventListener does (it asks for every event;
    /// the filter only spares the stand-in the rest).
    pub fn events(&self) -> io::Result<Events> {
        let filters = r#"{"type":["container"],"event":["start","die"]}"#;
        let path = format!("/events?filters={}", query_escape(filters));
        let (head, body) = self.open(&path, None)?;
        if head.status != 200 {
            return Err(bad(format!("GET /events: HTTP {}", head.status)));
        }
        Ok(Events {
            lines: BufReader::new(body),
        })
    }
}

/// A container event, as registrator reads it (`msg.Status`, `msg.ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub status: String,
    pub id: String,
}

/// Parses one event of the stream: `{"status":"start","id":"...",
/// "Type":"container","Action":"start",...}`. Newer engines may leave the
/// old `status`/`id` fields out: `Action` and `Actor.ID` then stand in.
pub fn parse_event(line: &str) -> Option<Event> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("Type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "container")
    {
        return None;
    }
    let status = v["status"].as_str().or(v["Action"].as_str())?;
    let id = v["id"].as_str().or(v["Actor"]["ID"].as_str())?;
    Some(Event {
        status: status.to_string(),
        id: id.to_string(),
    })
}

/// The event stream: one JSON object per line.
pub struct Events {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Events {
    /// The next container event; Ok(None) when the engine closed the
    /// stream.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if let Some(e) = parse_event(&line) {
                return Ok(Some(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_chunk_boundaries() {
        // Two events cut into chunks at awkward places, as a stream may be.
        let stream = "{\"status\":\"start\",\"id\":\"a\",\"Type\":\"container\",\"Action\":\"start\"}\n{\"status\":\"die\",\"id\":\"b\"}\n";
        let mut raw = String::new();
        for piece in [&stream[..27], &stream[27..60], &stream[60..]] {
            raw.push_str(&format!("{:x};ext=1\r\n{piece}\r\n", piece.len()));
        }
        raw.push_str("0\r\nTrailer: x\r\n\r\n");
        let mut events = Events {
            lines: BufReader::new(Box::new(Chunked::new(BufReader::new(
                std::io::Cursor::new(raw.into_bytes()),
            )))),
        };
        assert_eq!(
            events.next_event().unwrap(),
            Some(Event {
                status: "start".into(),
                id: "a".into()
            })
        );
        assert_eq!(
            events.next_event().unwrap(),
            Some(Event {
                status: "die".into(),
                id: "b".into()
            })
        );
        assert_eq!(events.next_event().unwrap(), None);
        let mut cut = Chunked::new(BufReader::new("5\r\nab".as_bytes()));
        assert!(cut.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn events_parse_like_registrator_reads_them() {
        // Docker 20.10's format: status/id/from plus Type/Action/Actor.
        let line = r#"{"status":"die","id":"4f2a","from":"img","Type":"container","Action":"die","Actor":{"ID":"4f2a","Attributes":{"exitCode":"0","name":"web"}},"scope":"local","time":1,"timeNano":1}"#;
        assert_eq!(
            parse_event(line),
            Some(Event {
                status: "die".into(),
                id: "4f2a".into()
            })
        );
        // Newer engines: Action and Actor.ID only.
        assert_eq!(
            parse_event(r#"{"Type":"container","Action":"start","Actor":{"ID":"x"}}"#)
                .unwrap()
                .id,
            "x"
        );
        assert_eq!(
            parse_event(r#"{"Type":"network","Action":"connect","Actor":{"ID":"n"}}"#),
            None
        );
        assert_eq!(parse_event("not json"), None);
    }

    #[test]
    fn heads_and_escapes() {
        let mut r = BufReader::new(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nTransfer-Encoding: chunked\r\n\r\n".as_bytes(),
        );
        let h = read_head(&mut r).unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.header("api-version"), Some("1.41"));
        assert!(h.chunked());
        assert!(read_head(&mut BufReader::new("SSH-2.0\r\n".as_bytes())).is_err());
        assert_eq!(
            query_escape(r#"{"type":["container"]}"#),
            "%7B%22type%22%3A%5B%22container%22%5D%7D"
        );
    }
}
