//! The consul stand-in's listeners: HTTP (TCP) and DNS (UDP) on every
//! client address, one thread per listener and per connection, plain std.
//! A TEST STAND-IN, NOT Consul.
//!
//! The threads never stop by themselves: the process exits on SIGTERM (see
//! [`crate::signals`]), whatever they are doing.

use super::api::Api;
use super::dns::{self, Zone};
use super::http::{self, ReadError, Response};
use super::BANNER;
use crate::Exit;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a connection may take to send its request before it is dropped
/// (not under `-hang`, which waits for the peer to give up).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What is being served, for the `ready:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub http: Vec<SocketAddr>,
    pub dns: Vec<SocketAddr>,
}

/// Appends one JSON object per line to the `-record` file.
pub struct Recorder(Option<Mutex<File>>);

impl Recorder {
    pub fn open(path: Option<&Path>) -> Result<Recorder, Exit> {
        let Some(path) = path else {
            return Ok(Recorder(None));
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                Exit::env(format!(
                    "cannot open the -record file {}: {e}",
                    path.display()
                ))
            })?;
        Ok(Recorder(Some(Mutex::new(file))))
    }

    pub fn line(&self, value: &Value) {
        if let Some(file) = &self.0 {
            let mut text = value.to_string();
            text.push('\n');
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            // One write per line (O_APPEND): lines never interleave.
            if let Err(e) = f.write_all(text.as_bytes()) {
                eprintln!("{BANNER}: warning: cannot write the record file: {e}");
            }
        }
    }
}

pub struct Shared {
    pub api: Api,
    pub zone: Zone,
    pub recorder: Recorder,
    pub hang: bool,
}

/// Parses `client_addr` (space-separated IP addresses; `0.0.0.0` or `::`
/// is the wildcard, bound as such).
pub fn client_ips(client_addr: &str) -> Result<Vec<IpAddr>, Exit> {
    if client_addr.contains("{{") {
        return Err(Exit::env(format!(
            "client_addr {client_addr:?} is a go-sockaddr template: the stand-in cannot evaluate \
             it and serves only on literal IP addresses"
        )));
    }
    client_addr
        .split_whitespace()
        .map(|a| {
            a.parse::<IpAddr>()
                .map_err(|_| Exit::env(format!("client_addr {a:?} is not an IP address")))
        })
        .collect()
}

fn bind_error(what: &str, addr: SocketAddr, e: std::io::Error) -> Exit {
    let hint = match e.kind() {
        ErrorKind::AddrNotAvailable => {
            " (no interface here has that address; the real agent fails the same way)"
        }
        ErrorKind::AddrInUse => " (something else listens there already)",
        ErrorKind::PermissionDenied => " (a privileged port?)",
        _ => "",
    };
    Exit::env(format!("cannot listen for {what} on {addr}: {e}{hint}"))
}

/// Binds HTTP (TCP) on `http_port` and DNS (UDP) on `dns_port` at every
/// address, then starts serving. Every bind happens before any thread
/// starts, so a failure leaves nothing half-served.
pub fn start(
    ips: &[IpAddr],
    http_port: u16,
    dns_port: u16,
    shared: Arc<Shared>,
) -> Result<Served, Exit> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for &ip in ips {
        let addr = SocketAddr::new(ip, http_port);
        // std sets SO_REUSEADDR on TCP listeners (Unix).
        let l = TcpListener::bind(addr).map_err(|e| bind_error("HTTP", addr, e))?;
        tcp.push(l);
        let addr = SocketAddr::new(ip, dns_port);
        let s = UdpSocket::bind(addr).map_err(|e| bind_error("DNS", addr, e))?;
        udp.push(s);
    }
    let served = Served {
        http: tcp.iter().map(|l| l.local_addr().unwrap()).collect(),
        dns: udp.iter().map(|s| s.local_addr().unwrap()).collect(),
    };
    for listener in tcp {
        let shared = shared.clone();
        std::thread::spawn(move || accept_loop(listener, shared));
    }
    for socket in udp {
        let shared = shared.clone();
        std::thread::spawn(move || dns_loop(socket, shared));
    }
    Ok(served)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &shared);
                });
            }
            Err(e) => {
                eprintln!("{BANNER}: warning: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let local = stream.local_addr()?.to_string();
    if !shared.hang {
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream.try_clone()?;
    // Under -hang no `100 Continue` either: it would be an answer.
    let mut continue_to: Box<dyn Write> = if shared.hang {
        Box::new(std::io::sink())
    } else {
        Box::new(stream.try_clone()?)
    };
    let request = http::read_request(&mut reader, &mut continue_to);
    if shared.hang {
        if let Ok(req) = &request {
            record_http(shared, &local, req, None);
        }
        // Read (and drop) whatever comes until the peer gives up.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        return Ok(());
    }
    let response = match request {
        Ok(req) => {
            let response = shared
                .api
                .handle(&req.method, &req.path, &req.query, &req.body);
            // Recorded before the answer goes out: once a client has its
            // answer, the line is in the file.
            record_http(shared, &local, &req, Some(response.status));
            response
        }
        Err(ReadError::Closed) | Err(ReadError::Io(_)) => return Ok(()),
        Err(ReadError::Bad(status, why)) => {
            shared.recorder.line(&json!({
                "proto": "http", "local": local, "error": why, "status": status,
            }));
            Response::text(status, why)
        }
    };
    http::write_response(&mut writer, &response)?;
    let _ = stream.shutdown(Shutdown::Write);
    // Let the peer read the answer before the socket closes: drain briefly
    // so that unread input does not turn the close into a reset.
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let _ = reader.read(&mut [0; 1024]);
    Ok(())
}

fn record_http(shared: &Shared, local: &str, req: &http::Request, status: Option<u16>) {
    shared.recorder.line(&json!({
        "proto": "http",
        "local": local,
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "body": String::from_utf8_lossy(&req.body),
        "status": status,
    }));
}

fn dns_loop(socket: UdpSocket, shared: Arc<Shared>) {
    let local = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut buf = [0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{BANNER}: warning: DNS recv on {local}: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let out = dns::respond(&buf[..n], &shared.zone, &shared.api);
        if out.response.is_none() {
            continue; // a runt or a response: not a query
        }
        let answered = !shared.hang;
        shared.recorder.line(&json!({
            "proto": "dns",
            "local": local,
            "id": out.id,
            "name": out.name,
            "qtype": dns::type_name(out.qtype),
            "rcode": answered.then_some(out.rcode),
            "answers": if answered { out.answers.clone() } else { Vec::new() },
        }));
        if let (Some(bytes), true) = (&out.response, answered) {
            if let Err(e) = socket.send_to(bytes, peer) {
                eprintln!("{BANNER}: warning: DNS send to {peer}: {e}");
            }
        }
    }
}
