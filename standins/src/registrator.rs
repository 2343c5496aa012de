//! The registrator STAND-IN (`registrator-standin`). It is NOT registrator: it
//! registers nothing. It checks how nodeprep started it, then blocks until
//! SIGTERM:
//!
//! 1. the command line parses like gliderlabs/registrator v7's Go `flag`
//!    parsing: options first, then exactly one registry URI (an option after
//!    the URI is an extra argument); an unknown option: exit 2;
//! 2. the URI starts with `consul://`; `-ip <IPv4>` was given (registrator
//!    itself does not require it, but without it it registers whatever the
//!    hostname resolves to, so nodeprep always passes it); else exit 1;
//! 3. `/tmp/docker.sock` exists, is a socket (the host's docker socket
//!    bind-mounted) and answers `GET /_ping` with `OK`; else exit 1.
//!
//! Later: [`serve`] is where it would register containers into the consul
//! stand-in named by the URI.

use crate::{signals, split_flag, Banner, Exit};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const BANNER: Banner = Banner("registrator-standin (test stand-in, NOT registrator)");

/// Where the real image's registrator looks for the Docker API by default.
pub const DOCKER_SOCKET: &str = "/tmp/docker.sock";

/// gliderlabs/registrator v7's flags: (name, takes a value).
const FLAGS: &[(&str, bool)] = &[
    ("ip", true),
    ("internal", false),
    ("explicit", false),
    ("useIpFromLabel", true),
    ("ttl", true),
    ("ttl-refresh", true),
    ("tags", true),
    ("resync", true),
    ("deregister", true),
    ("retry-attempts", true),
    ("retry-interval", true),
    ("cleanup", false),
    ("version", false),
];

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub ip: Option<String>,
    pub uri: String,
    /// Every option before the URI, as given.
    pub options: Vec<String>,
}

pub fn parse(args: &[String]) -> Result<Args, Exit> {
    let mut ip = None;
    let mut i = 0;
    // Go's flag package: parse options until the first non-option or `--`.
    while i < args.len() {
        if args[i] == "--" {
            i += 1;
            break;
        }
        let Some((name, inline)) = split_flag(&args[i]) else {
            break;
        };
        let Some(&(_, takes_value)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(Exit::usage(format!(
                "flag provided but not defined: -{name} (the stand-in knows registrator v7's flags; \
                 add it to standins/src/registrator.rs if the pinned registrator has it)"
            )));
        };
        let value = if takes_value && inline.is_none() {
            i += 1;
            Some(
                args.get(i)
                    .cloned()
                    .ok_or_else(|| Exit::usage(format!("flag needs an argument: -{name}")))?,
            )
        } else {
            inline.map(str::to_string)
        };
        if name == "ip" {
            ip = value;
        }
        i += 1;
    }
    let options = args[..i].to_vec();
    let positional = &args[i..];
    let uri = match positional {
        [] => {
            return Err(Exit::env(format!(
                "Missing required argument for registry URI (args: {args:?})"
            )))
        }
        [uri] => uri.clone(),
        [_, extra @ ..] => {
            return Err(Exit::env(format!(
                "Extra unparsed arguments: {extra:?} (options must come before the registry URI; args: {args:?})"
            )))
        }
    };
    Ok(Args { ip, uri, options })
}

/// Checks the arguments' meaning and the Docker socket.
pub fn prepare(args: &Args) -> Result<(), Exit> {
    if !args.uri.starts_with("consul://") {
        return Err(Exit::env(format!(
            "registry URI {:?} does not start with consul://",
            args.uri
        )));
    }
    match &args.ip {
        None => {
            return Err(Exit::env(
                "-ip <IPv4> is missing before the registry URI (without it registrator registers \
                 whatever the hostname resolves to)",
            ))
        }
        Some(ip) => {
            ip.parse::<Ipv4Addr>()
                .map_err(|_| Exit::env(format!("-ip {ip:?} is not an IPv4 address")))?;
        }
    }
    ping_docker(Path::new(DOCKER_SOCKET))
}

fn ping_docker(path: &Path) -> Result<(), Exit> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Exit::env(format!(
            "{}: {e} (bind-mount the host's /var/run/docker.sock there)",
            path.display()
        ))
    })?;
    if !meta.file_type().is_socket() {
        return Err(Exit::env(format!(
            "{} exists but is not a socket (bind-mount the host's /var/run/docker.sock there)",
            path.display()
        )));
    }
    let answer = (|| -> std::io::Result<String> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })()
    .map_err(|e| Exit::env(format!("Docker API on {}: {e}", path.display())))?;
    let ok = answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK");
    if !ok {
        return Err(Exit::env(format!(
            "Docker API on {} did not answer /_ping with 200 OK: {:?}",
            path.display(),
            answer.lines().next().unwrap_or("")
        )));
    }
    Ok(())
}

/// Starts what the stand-in serves. Nothing yet.
pub fn serve(_args: &Args) -> Result<(), Exit> {
    Ok(())
}

/// The whole program: parse, check, serve, print `ready:`, wait for SIGTERM.
pub fn run(args: &[String]) -> Result<(), Exit> {
    println!("{BANNER}: starting with args {args:?}");
    let parsed = parse(args)?;
    prepare(&parsed)?;
    serve(&parsed)?;
    println!(
        "{BANNER}: ready: ip={} registry={} options={:?} docker={DOCKER_SOCKET} (_ping OK)",
        parsed.ip.as_deref().unwrap_or(""),
        parsed.uri,
        parsed.options,
    );
    signals::wait();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options_then_one_uri() {
        let a = parse(&s(&[
            "-ip",
            "192.0.2.10",
            "-resync=30",
            "-cleanup",
            "consul://169.254.1.1:8500",
        ]))
        .unwrap();
        assert_eq!(a.ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(a.uri, "consul://169.254.1.1:8500");
        let a = parse(&s(&["--ip=192.0.2.10", "consul://x"])).unwrap();
        assert_eq!(a.ip.as_deref(), Some("192.0.2.10"));
    }

    #[test]
    fn misplaced_or_missing() {
        let e = parse(&s(&["consul://x", "-ip", "192.0.2.10"])).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.message.contains("Extra unparsed arguments"),
            "{}",
            e.message
        );
        let e = parse(&s(&["-ip", "192.0.2.10"])).unwrap_err();
        assert!(
            e.message.contains("Missing required argument"),
            "{}",
            e.message
        );
        let e = parse(&s(&["-bogus", "consul://x"])).unwrap_err();
        assert_eq!(e.code, 2);
        let e = parse(&s(&["-ip"])).unwrap_err();
        assert_eq!(e.code, 2);
    }

    #[test]
    fn meaning() {
        let check = |args: &[&str]| prepare(&parse(&s(args)).unwrap()).unwrap_err().message;
        assert!(check(&["-ip", "192.0.2.10", "etcd://x"]).contains("consul://"));
        assert!(check(&["consul://x"]).contains("-ip <IPv4> is missing"));
        assert!(check(&["-ip", "2001:db8::1", "consul://x"]).contains("not an IPv4"));
    }
}
