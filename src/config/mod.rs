//! The configuration: the file's schema ([`schema`]), its validated value
//! types ([`types`]) and the resolved configuration with every default filled
//! in ([`resolve`]). Parsing is pure; the only files read are the
//! configuration itself and, after it parsed, a gossip key file
//! ([`Config::read_secrets`]).
//!
//! Validation happens inside deserialization on purpose: the toml parser then
//! attaches the line, column and key path of the offending value to the error,
//! which a separate validation pass over plain structs could not do.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

mod resolve;
mod schema;
mod types;

pub use resolve::*;
pub use schema::File;
pub use types::*;

/// Where `apply` and `check` look for their configuration by default.
pub const DEFAULT_PATH: &str = "/etc/nodeprep/nodeprep.toml";

/// The largest configuration file nodeprep reads (256 KiB).
pub const MAX_CONFIG: u64 = 256 << 10;

/// The largest gossip key file nodeprep reads (4 KiB; a key is 24 or 44
/// characters).
pub const MAX_KEY_FILE: u64 = 4 << 10;

/// The commented default configuration printed by `nodeprep config default`.
/// A test proves that it parses back to [`Config::default`].
pub const DEFAULT_TOML: &str = include_str!("default.toml");

impl Config {
    /// Parses configuration text. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let invalid = || format!("invalid configuration in {}", origin.display());
        let de = toml::Deserializer::parse(text).with_context(invalid)?;
        // serde_path_to_error records the key path ("consul.bind_addr") while
        // the toml error itself carries the line, column and offending text.
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned<T> fields show up as an inner private key: drop it.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            if key == "consul.encrypt" {
                // The toml error quotes the offending line: never for a secret.
                let at = position(text, inner.span().map_or(0, |s| s.start));
                return anyhow::anyhow!("{}: {at}, key `{key}`: {}", invalid(), inner.message());
            }
            anyhow::Error::new(inner).context(format!("{}: key `{key}`", invalid()))
        })?;
        Config::resolve(file, text).map_err(|e| anyhow::anyhow!("{}: {e}", invalid()))
    }

    /// Parses configuration text and reads the secrets it points at (the
    /// gossip key of `consul.encrypt_file`). `origin` names the file.
    pub fn from_text(text: &str, origin: &Path) -> Result<Config> {
        let mut cfg = Config::parse(text, origin)?;
        cfg.read_secrets(origin)?;
        Ok(cfg)
    }

    /// Reads `consul.encrypt_file`, if set, into `consul.cluster.encrypt`.
    /// Errors name the configuration file and the key's line, never the key.
    pub fn read_secrets(&mut self, origin: &Path) -> Result<()> {
        let cluster = &mut self.consul.cluster;
        let Some((path, line)) = &cluster.encrypt_file else {
            return Ok(());
        };
        let at = || {
            format!(
                "invalid configuration in {}: {line}, key `consul.encrypt_file`",
                origin.display()
            )
        };
        // A FIFO or device named here must not hang or flood the run.
        let key = crate::sys::files::read_input(path, MAX_KEY_FILE)
            .map_err(|e| anyhow::anyhow!("{}: cannot read {}: {e}", at(), path.display()))?;
        let key = String::from_utf8(key)
            .map_err(|_| anyhow::anyhow!("{}: {} is not text", at(), path.display()))?;
        // The key itself is never echoed, only where it came from.
        let key = GossipKey::try_from(key.trim().to_string())
            .map_err(|e| anyhow::anyhow!("{}: {}: {e}", at(), path.display()))?;
        cluster.encrypt = Some(key);
        Ok(())
    }

    /// Loads the configuration. With no explicit path, a missing default file
    /// means the embedded defaults; an explicit path must exist.
    ///
    /// The file is read only when it is a regular file (links followed), at
    /// most [`MAX_CONFIG`] bytes: a FIFO or device is refused, never read.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Source)> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_PATH));
        match crate::sys::files::read_input(path, MAX_CONFIG) {
            Ok(bytes) => {
                let text = decode(&bytes).map_err(|e| {
                    anyhow::anyhow!("invalid configuration in {}: {e}", path.display())
                })?;
                Ok((
                    Config::from_text(text, path)?,
                    Source::File(path.to_path_buf()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                Ok((Config::default(), Source::Embedded))
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot read configuration {}", path.display()))
            }
        }
    }
}

/// The configuration's text; bytes that are not UTF-8 are an error naming
/// their line and column.
fn decode(bytes: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
        format!(
            "{}: a byte that is not UTF-8 (TOML files are UTF-8 text)",
            position(valid, valid.len())
        )
    })
}

/// Where the configuration came from, for `facts` and verbose output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Embedded,
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => write!(f, "embedded default (no {DEFAULT_PATH})"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/nodeprep/nodeprep.toml"))
    }

    fn from_text(text: &str) -> Result<Config> {
        Config::from_text(text, Path::new("/etc/nodeprep/nodeprep.toml"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", from_text(text).unwrap_err())
    }

    #[test]
    fn embedded_default_toml_parses_back_to_the_default() {
        assert_eq!(parse(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn default_is_seed_001_layout_with_corrections() {
        let c = Config::default();
        assert_eq!(c.link.name.0, "dummy0");
        assert_eq!(c.link.address.to_string(), "169.254.1.1/32");
        assert_eq!(c.consul.client_addr.to_string(), "127.0.0.1 169.254.1.1");
        assert_eq!(c.consul.bind_addr, BindAddr::Auto);
        assert_eq!(
            c.dnsmasq.listen,
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1))
            ]
        );
        let vars: Vec<(String, String)> = c
            .environment
            .vars
            .iter()
            .map(|(k, v)| (k.0.clone(), v.0.clone()))
            .collect();
        assert_eq!(
            vars,
            vec![("CONSUL_HTTP_ADDR".into(), "169.254.1.1:8500".into())]
        );
    }

    #[test]
    fn derived_defaults_follow_the_link_address() {
        let c =
            parse("[link]\naddress = \"169.254.7.7/32\"\n[consul]\nhttp_port = 8501\n").unwrap();
        assert_eq!(c.consul.client_addr.to_string(), "127.0.0.1 169.254.7.7");
        assert_eq!(
            c.dnsmasq.listen[1],
            IpAddr::V4(Ipv4Addr::new(169, 254, 7, 7))
        );
        assert_eq!(
            c.environment.vars[&EnvName("CONSUL_HTTP_ADDR".into())].0,
            "169.254.7.7:8501"
        );
    }

    #[test]
    fn pinned_image_references_are_accepted() {
        for image in [
            "hashicorp/consul:1.20.1",
            "gliderlabs/registrator:v7",
            "localhost:5000/consul:1.20",
            "127.0.0.1:5999/nodeprep-test/absent:1",
            "registry.example.com/team/consul@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            parse(&format!("[consul]\nimage = \"{image}\"\n")).unwrap_or_else(|e| panic!("{image}: {e:#}"));
        }
    }

    #[test]
    fn gossip_key_never_appears_in_debug_output() {
        let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
        let c = parse(&format!("[consul]\nencrypt = \"{key}\"\n")).unwrap();
        assert!(!format!("{c:?}").contains(key));
        assert!(!serde_json::to_string(&c).unwrap().contains(key));
        // A mistyped key is not echoed in the error either.
        let typo = &key[..key.len() - 2];
        let e = err(&format!("[consul]\nencrypt = \"{typo}\"\n"));
        assert!(!e.contains(typo) && e.contains("line 2"), "{e}");
    }

    #[test]
    fn encrypt_file_is_read_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gossip.key");
        std::fs::write(&key, "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=\n").unwrap();
        let c = from_text(&format!("[consul]\nencrypt_file = \"{}\"\n", key.display())).unwrap();
        assert_eq!(
            c.consul.cluster.encrypt.unwrap().expose(),
            "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
        );
        std::fs::write(&key, "secret-but-wrong\n").unwrap();
        let e = format!(
            "{:#}",
            from_text(&format!("[consul]\nencrypt_file = \"{}\"\n", key.display())).unwrap_err()
        );
        assert!(
            e.contains("consul.encrypt_file") && !e.contains("secret-but-wrong"),
            "{e}"
        );
    }

    #[test]
    fn environment_vars_add_to_the_managed_set() {
        let c = parse("[environment.vars]\nCONSUL_RPC_ADDR = \"169.254.1.1:8400\"\n").unwrap();
        assert_eq!(c.environment.vars.len(), 2);
    }

    /// Values that parse but would break the layout are refused (exit 78),
    /// naming the line, column and key.
    #[test]
    fn harmful_values_are_refused_with_line_column_and_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[dnsmasq]\nlisten = []\n",
                &["line 2, column 10", "dnsmasq.listen", "every interface"],
            ),
            (
                "[dnsmasq]\nlisten = [\"0.0.0.0\"]\n",
                &["line 2", "dnsmasq.listen", "every interface"],
            ),
            ("[dnsmasq]\nlisten = [\"224.0.0.1\"]\n", &["dnsmasq.listen"]),
            (
                "[dnsmasq]\nlisten = [\"127.0.0.1\", \"127.0.0.1\"]\n",
                &["dnsmasq.listen", "twice"],
            ),
            (
                "[consul]\ndns_port = 53\n",
                &["line 2, column 12", "consul.dns_port", "itself"],
            ),
            (
                "[consul]\nhttp_port = 53\n",
                &["consul.http_port", "dnsmasq"],
            ),
            ("[consul]\nhttp_port = 80\n", &["consul.http_port", "1024"]),
            (
                "[consul]\ndns_port = 8301\n",
                &["consul.dns_port", "gossip"],
            ),
            (
                "[consul]\nhttp_port = 8600\n",
                &["line 2", "consul.http_port", "both 8600"],
            ),
            (
                "[consul]\nhttp_port = 9000\ndns_port = 9000\n",
                &["consul.http_port", "both 9000"],
            ),
            (
                "[consul]\nclient_addr = \"0.0.0.0\"\n",
                &["consul.client_addr", "every interface"],
            ),
            (
                "[consul]\nbind_addr = \"169.254.1.1\"\n",
                &["line 2", "consul.bind_addr"],
            ),
            (
                "[dnsmasq]\nfile = \"/etc/dnsmasq.d/\"\n",
                &["line 2", "dnsmasq.file", "names a directory"],
            ),
            (
                "[environment]\nfile = \"/etc/.\"\n",
                &["environment.file", "names a directory"],
            ),
            (
                "[environment]\nfile = \"/\"\n",
                &["environment.file", "names a directory"],
            ),
            (
                "[consul]\nencrypt_file = \"/etc/consul/\"\n",
                &["consul.encrypt_file", "names a directory"],
            ),
            (
                "[consul]\nconfig_dir = \"/\"\n",
                &["consul.config_dir", "may not be /"],
            ),
            ("[state]\ndir = \"/\"\n", &["state.dir", "may not be /"]),
            (
                "[environment]\nfile = \"/etc/dnsmasq.d/consul.conf\"\n",
                &["environment.file", "dnsmasq.file", "fight"],
            ),
            (
                "[dnsmasq]\nfile = \"/etc/consul.d/agent.json\"\n",
                &["fight"],
            ),
            (
                "[dnsmasq]\nfile = \"/var/lib/nodeprep/x.conf\"\n",
                &["dnsmasq.file", "inside state.dir"],
            ),
            (
                "[consul]\ndata_dir = \"/etc/consul.d\"\n",
                &["consul.data_dir", "overlaps"],
            ),
            (
                "[state]\ndir = \"/etc/consul.d/state\"\n",
                &["state.dir", "overlaps"],
            ),
            (
                "[environment.vars]\nX = \"a#b\"\n",
                &["line 2", "environment.vars", "'#'"],
            ),
        ];
        for (text, needles) in cases {
            let msg = err(text);
            for n in *needles {
                assert!(
                    msg.contains(n),
                    "expected {n:?} in error for {text:?}:\n{msg}"
                );
            }
        }
    }

    /// Errors of the text itself name a line and column too: a byte that is
    /// not UTF-8, nesting deeper than the parser allows, a FIFO or device
    /// named as the configuration or the key file (refused, never read).
    #[test]
    fn encoding_nesting_and_special_files_name_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodeprep.toml");
        std::fs::write(&path, b"[consul]\ndatacenter = \"dc\xff1\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(
            e.contains("line 2, column 17") && e.contains("UTF-8"),
            "{e}"
        );
        let deep = format!("x = {}1{}\n", "[".repeat(5000), "]".repeat(5000));
        let e = err(&deep);
        assert!(e.contains("line 1, column"), "{}", &e[..e.len().min(300)]);
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        for p in [fifo.as_path(), Path::new("/dev/zero")] {
            let e = format!("{:#}", Config::load(Some(p)).unwrap_err());
            assert!(e.contains("not a regular file"), "{e}");
            let e = err(&format!("[consul]\nencrypt_file = \"{}\"\n", p.display()));
            assert!(
                e.contains("line 2, column 16") && e.contains("not a regular file"),
                "{e}"
            );
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[link]\nname = \"averyveryverylongname\"\n",
                &["line 2", "link.name", "15 bytes"],
            ),
            (
                "[link]\naddress = \"169.254.1.1/16\"\n",
                &["line 2", "link.address", "/32"],
            ),
            (
                "[link]\naddress = \"169.254.1.300/32\"\n",
                &["line 2", "link.address", "CIDR"],
            ),
            ("[link]\nnmae = \"dummy0\"\n", &["line 2", "nmae"]),
            (
                "[consul]\n\nbind_addr = \"10.0.0.x\"\n",
                &["line 3", "consul.bind_addr"],
            ),
            (
                "[consul]\nhttp_port = 70000\n",
                &["line 2", "consul.http_port", "65535"],
            ),
            (
                "[consul]\nhttp_port = \"8500\"\n",
                &["line 2", "consul.http_port"],
            ),
            (
                "[consul]\nclient_addr = \"127.0.0.1 nope\"\n",
                &["consul.client_addr", "nope"],
            ),
            (
                "[dnsmasq]\nlisten = [\"127.0.0.1\", \"::1x\"]\n",
                &["line 2", "dnsmasq.listen"],
            ),
            (
                "[dnsmasq]\nfile = \"relative/consul.conf\"\n",
                &["dnsmasq.file", "absolute"],
            ),
            (
                "[environment.vars]\n\"1BAD\" = \"x\"\n",
                &["line 2", "1BAD"],
            ),
            (
                "[environment.vars]\nFOO = \"a\\\"b\"\n",
                &["line 2", "environment.vars"],
            ),
            ("[bogus]\n", &["line 1", "bogus"]),
            ("link = 3\n", &["line 1", "link"]),
            (
                "[consul]\n\nbootstrap_expect = 3\n",
                &["line 3", "consul.bootstrap_expect", "servers only"],
            ),
            (
                "[consul]\nrole = \"server\"\n",
                &["line 2, column 8", "consul.bootstrap_expect", "no leader"],
            ),
            ("[consul]\nrole = \"leader\"\n", &["line 2", "consul.role"]),
            (
                "[consul]\nencrypt = \"c2hvcnQ=\"\n",
                &["line 2", "consul.encrypt", "16 or 32"],
            ),
            (
                "[consul]\nencrypt = \"not base64!\"\n",
                &["line 2", "consul.encrypt", "base64"],
            ),
            (
                "[consul]\nretry_join = [\"10.0.0.1\", \"\"]\n",
                &["line 2", "consul.retry_join", "empty"],
            ),
            (
                "[consul]\nimage = \"hashicorp/consul\"\n",
                &["line 2", "consul.image", "not pinned"],
            ),
            (
                "[consul]\nimage = \"hashicorp/consul:latest\"\n",
                &["consul.image", "not pinned"],
            ),
            (
                "[consul]\nimage = \"Hashicorp/Consul:1.2\"\n",
                &["consul.image", "not a valid image"],
            ),
            ("[consul]\ncontainer = \"-bad\"\n", &["consul.container"]),
            (
                "[consul]\nencrypt_file = \"/nonexistent/key\"\n",
                &["line 2", "consul.encrypt_file", "/nonexistent/key"],
            ),
            (
                "[registrator]\nargs = [\"-resync 30\"]\n",
                &["line 2", "registrator.args"],
            ),
            (
                "[registrator]\nargs = [\"consul://1.2.3.4:8500\"]\n",
                &["registrator.args", "URI"],
            ),
            (
                "[docker]\nwait_secs = -1\n",
                &["line 2", "docker.wait_secs"],
            ),
        ];
        for (text, needles) in cases {
            let msg = err(text);
            assert!(msg.contains("/etc/nodeprep/nodeprep.toml"), "{msg}");
            assert!(
                msg.contains("column ") || text.contains("encrypt_file"),
                "no column in the error for {text:?}:\n{msg}"
            );
            for n in *needles {
                assert!(
                    msg.contains(n),
                    "expected {n:?} in error for {text:?}:\n{msg}"
                );
            }
        }
    }
}
