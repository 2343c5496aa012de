//! How the consul STAND-IN reads its configuration: the way Consul's
//! `agent/config` package does, for JSON files (NOT Consul's loader).
//!
//! - Sources, in order: every `*.json` file directly in the config dir in
//!   lexical order (Consul's `builder.sourcesFromPath`: sorted by name,
//!   sub-directories skipped, `*.hcl` parsed by Consul but only warned about
//!   here, other extensions skipped with a warning), then each
//!   `-config-file`.
//! - Each file is checked on its own, like Consul's `FileSource.Parse`
//!   (mapstructure decode into `Config` + `DeprecatedConfig`) followed by
//!   `builder.build`'s check of the unused keys: a value of the wrong JSON
//!   type is `failed to parse FILE: 1 error(s) decoding: * 'KEY' expected
//!   type 'bool', got unconvertible type 'string', value: 'yes'`; an unknown
//!   key is `failed to parse FILE: 1 error occurred: * invalid config key
//!   KEY` (nested keys as `ports.bogus`). The agent exits 1 on either.
//! - Merge (Consul's `Merge`): later scalars override earlier ones, arrays
//!   (`retry_join`...) append, objects merge key by key.
//!
//! The key table below is the one place that says which keys exist and of
//! which type. Top-level keys are all checked; the nested objects nodeprep
//! writes or that the stand-in reads (`ports`, `ui_config`, `addresses`) are
//! checked key by key; every other nested object is accepted as "an object"
//! without looking inside.

use serde_json::{Map, Value};

/// The JSON shape of a key, as mapstructure decodes it into Consul's field.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `*string` (also `*time.Time`, decoded from a string).
    Str,
    /// `*bool`.
    Bool,
    /// `*int`, `*uint`...: any JSON number (mapstructure truncates a float).
    Int,
    /// `*float64`.
    Float,
    /// `[]string`.
    Strs,
    /// `map[string]string`.
    StrMap,
    /// A struct whose keys are checked one by one.
    Obj(&'static [(&'static str, Kind)]),
    /// A struct or map the stand-in does not look into.
    AnyObj,
    /// A slice of structs or maps (`checks`, `services`, `watches`...).
    Objs,
}

use Kind::*;

/// `ports` (Consul's `Ports` struct).
pub const PORTS: &[(&str, Kind)] = &[
    ("dns", Int),
    ("http", Int),
    ("https", Int),
    ("serf_lan", Int),
    ("serf_wan", Int),
    ("server", Int),
    ("grpc", Int),
    ("grpc_tls", Int),
    ("proxy_min_port", Int),
    ("proxy_max_port", Int),
    ("sidecar_min_port", Int),
    ("sidecar_max_port", Int),
    ("expose_min_port", Int),
    ("expose_max_port", Int),
];

/// `ui_config` (Consul's `RawUIConfig` struct).
pub const UI_CONFIG: &[(&str, Kind)] = &[
    ("enabled", Bool),
    ("dir", Str),
    ("content_path", Str),
    ("metrics_provider", Str),
    ("metrics_provider_files", Strs),
    ("metrics_provider_options_json", Str),
    ("metrics_proxy", AnyObj),
    ("dashboard_url_templates", StrMap),
];

/// `addresses` (Consul's `Addresses` struct).
pub const ADDRESSES: &[(&str, Kind)] = &[
    ("dns", Str),
    ("http", Str),
    ("https", Str),
    ("grpc", Str),
    ("grpc_tls", Str),
];

/// Every top-level key of a Consul agent config file.
///
/// Source: hashicorp/consul, `agent/config/config.go` at commit
/// bf11280c9baf6bcf4dd1e6b124ca28e8844fcf6f (struct `Config`, its
/// `mapstructure` tags; nested `Ports`, `RawUIConfig`, `Addresses`) and
/// `agent/config/deprecated.go` at commit
/// 090b1af9ec703f033220b4e9fc36f3a2a200f3ea (struct `DeprecatedConfig`,
/// squashed into the same decode target). Those are the newest versions of
/// the two files the reference store held; the v1.20.1 tag (what nodeprep
/// pins) could not be read directly, so a key added between that commit and
/// 1.20.1 is refused here although Consul 1.20 would take it. `experiments`
/// is the one such key added by hand (documented for Consul 1.17+).
pub const KEYS: &[(&str, Kind)] = &[
    ("acl", AnyObj),
    ("addresses", Obj(ADDRESSES)),
    ("advertise_addr", Str),
    ("advertise_addr_ipv4", Str),
    ("advertise_addr_ipv6", Str),
    ("advertise_addr_wan", Str),
    ("advertise_addr_wan_ipv4", Str),
    ("advertise_addr_wan_ipv6", Str),
    ("advertise_reconnect_timeout", Str),
    ("auto_config", AnyObj),
    ("autopilot", AnyObj),
    ("bind_addr", Str),
    ("bootstrap", Bool),
    ("bootstrap_expect", Int),
    ("cache", AnyObj),
    ("check", AnyObj),
    ("check_output_max_size", Int),
    ("check_update_interval", Str),
    ("checks", Objs),
    ("client_addr", Str),
    ("cloud", AnyObj),
    ("config_entries", AnyObj),
    ("auto_encrypt", AnyObj),
    ("connect", AnyObj),
    ("dns_config", AnyObj),
    ("domain", Str),
    ("alt_domain", Str),
    ("recursors", Strs),
    ("data_dir", Str),
    ("datacenter", Str),
    ("default_query_time", Str),
    ("disable_anonymous_signature", Bool),
    ("disable_coordinates", Bool),
    ("disable_host_node_id", Bool),
    ("disable_http_unprintable_char_filter", Bool),
    ("disable_keyring_file", Bool),
    ("disable_remote_exec", Bool),
    ("disable_update_check", Bool),
    ("discard_check_output", Bool),
    ("discovery_max_stale", Str),
    ("enable_agent_tls_for_checks", Bool),
    ("enable_central_service_config", Bool),
    ("enable_debug", Bool),
    ("enable_script_checks", Bool),
    ("enable_local_script_checks", Bool),
    ("enable_syslog", Bool),
    ("encrypt", Str),
    ("encrypt_verify_incoming", Bool),
    ("encrypt_verify_outgoing", Bool),
    ("experiments", Strs),
    ("gossip_lan", AnyObj),
    ("gossip_wan", AnyObj),
    ("http_config", AnyObj),
    ("leave_on_terminate", Bool),
    ("license_path", Str),
    ("limits", AnyObj),
    ("locality", AnyObj),
    ("log_level", Str),
    ("log_sublevels", StrMap),
    ("log_json", Bool),
    ("log_file", Str),
    ("log_rotate_duration", Str),
    ("log_rotate_bytes", Int),
    ("log_rotate_max_files", Int),
    ("max_query_time", Str),
    ("node_id", Str),
    ("node_meta", StrMap),
    ("node_name", Str),
    ("peering", AnyObj),
    ("performance", AnyObj),
    ("pid_file", Str),
    ("ports", Obj(PORTS)),
    ("primary_datacenter", Str),
    ("primary_gateways", Strs),
    ("primary_gateways_interval", Str),
    ("protocol", Int),
    ("raft_protocol", Int),
    ("raft_snapshot_threshold", Int),
    ("raft_snapshot_interval", Str),
    ("raft_trailing_logs", Int),
    ("reconnect_timeout", Str),
    ("reconnect_timeout_wan", Str),
    ("rejoin_after_leave", Bool),
    ("auto_reload_config", Bool),
    ("retry_interval", Str),
    ("retry_interval_wan", Str),
    ("retry_join", Strs),
    ("retry_max", Int),
    ("retry_max_wan", Int),
    ("retry_join_wan", Strs),
    ("serf_lan_allowed_cidrs", Strs),
    ("serf_wan_allowed_cidrs", Strs),
    ("serf_lan", Str),
    ("serf_wan", Str),
    ("server", Bool),
    ("server_name", Str),
    ("service", AnyObj),
    ("services", Objs),
    ("session_ttl_min", Str),
    ("skip_leave_on_interrupt", Bool),
    ("syslog_facility", Str),
    ("tls", AnyObj),
    ("tagged_addresses", StrMap),
    ("telemetry", AnyObj),
    ("translate_wan_addrs", Bool),
    ("xds", AnyObj),
    ("ui", Bool),
    ("ui_content_path", Str),
    ("ui_dir", Str),
    ("ui_config", Obj(UI_CONFIG)),
    ("unix_sockets", AnyObj),
    ("watches", Objs),
    ("rpc", AnyObj),
    ("raft_logstore", AnyObj),
    ("use_streaming_backend", Bool),
    ("snapshot_agent", AnyObj),
    ("ae_interval", Str),
    ("check_deregister_interval_min", Str),
    ("check_reap_interval", Str),
    ("consul", AnyObj),
    ("revision", Str),
    ("segment_limit", Int),
    ("segment_name_limit", Int),
    ("sync_coordinate_interval_min", Str),
    ("sync_coordinate_rate_target", Float),
    ("version", Str),
    ("version_prerelease", Str),
    ("version_metadata", Str),
    ("build_date", Str),
    ("audit", AnyObj),
    ("read_replica", Bool),
    // The alias mapstructure's HookTranslateKeys maps to read_replica.
    ("non_voting_server", Bool),
    ("segment", Str),
    ("segments", Objs),
    ("partition", Str),
    ("license_poll_base_time", Str),
    ("license_poll_max_time", Str),
    ("license_update_base_time", Str),
    ("license_update_max_time", Str),
    ("reporting", AnyObj),
    // DeprecatedConfig (deprecated.go): still accepted, with a warning.
    ("acl_agent_master_token", Str),
    ("acl_agent_token", Str),
    ("acl_token", Str),
    ("acl_enable_key_list_policy", Bool),
    ("acl_master_token", Str),
    ("acl_replication_token", Str),
    ("enable_acl_replication", Bool),
    ("acl_datacenter", Str),
    ("acl_default_policy", Str),
    ("acl_down_policy", Str),
    ("acl_ttl", Str),
    ("ca_file", Str),
    ("ca_path", Str),
    ("cert_file", Str),
    ("key_file", Str),
    ("tls_cipher_suites", Str),
    ("tls_min_version", Str),
    ("verify_incoming", Bool),
    ("verify_incoming_https", Bool),
    ("verify_incoming_rpc", Bool),
    ("verify_outgoing", Bool),
    ("verify_server_hostname", Bool),
    ("tls_prefer_server_cipher_suites", Bool),
    ("start_join", Strs),
    ("start_join_wan", Strs),
    ("raft_boltdb", AnyObj),
];

/// Keys `builder.build` accepts with only a warning although no field has
/// them.
const WARN_ONLY: &[&str] = &["acl_enforce_version_8"];

/// Go's name for the type a JSON value decodes to (`interface{}` target).
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// reflect.Kind's name of that type.
fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// `%v` of a scalar as Go prints it.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// What one file's decode found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// mapstructure decode errors (wrong types).
    pub type_errors: Vec<String>,
    /// Keys no field takes (full dotted path), sorted.
    pub unused: Vec<String>,
    /// Warnings (deprecated or ignored keys).
    pub warnings: Vec<String>,
}

/// Checks one parsed file against [`KEYS`].
pub fn check_object(object: &Map<String, Value>) -> Findings {
    let mut f = Findings::default();
    check_struct("", object, KEYS, &mut f);
    f.unused.sort();
    f
}

fn check_struct(
    prefix: &str,
    object: &Map<String, Value>,
    table: &[(&str, Kind)],
    f: &mut Findings,
) {
    for (key, value) in object {
        let name = format!("{prefix}{key}");
        match table.iter().find(|(k, _)| k == key) {
            Some((_, kind)) => check_value(&name, value, *kind, f),
            None if prefix.is_empty() && WARN_ONLY.contains(&key.as_str()) => f.warnings.push(
                format!("config key {key:?} is deprecated and should be removed"),
            ),
            None => f.unused.push(name),
        }
        if prefix.is_empty() && is_deprecated(key) {
            f.warnings.push(format!("The '{key}' field is deprecated."));
        }
    }
}

fn is_deprecated(key: &str) -> bool {
    let start = KEYS
        .iter()
        .position(|(k, _)| *k == "acl_agent_master_token")
        .unwrap_or(KEYS.len());
    KEYS[start..].iter().any(|(k, _)| *k == key)
}

fn check_value(name: &str, value: &Value, kind: Kind, f: &mut Findings) {
    // Consul's decode.HookWeakDecodeFromSlice: a one-element array (HCL's
    // block syntax produces them) stands for its element where the field is
    // not a slice; an empty one for nothing.
    let is_slice = matches!(kind, Strs | Objs);
    let value = match value {
        Value::Array(items) if !is_slice && items.len() <= 1 => match items.first() {
            Some(v) => v,
            None => return,
        },
        v => v,
    };
    if value.is_null() {
        return;
    }
    let unconvertible = |want: &str| {
        format!(
            "'{name}' expected type '{want}', got unconvertible type '{}', value: '{}'",
            go_type(value),
            go_value(value)
        )
    };
    match kind {
        Str => {
            if !value.is_string() {
                f.type_errors.push(unconvertible("string"));
            }
        }
        Bool => {
            if !value.is_boolean() {
                f.type_errors.push(unconvertible("bool"));
            }
        }
        Int => {
            if !value.is_number() {
                f.type_errors.push(unconvertible("int"));
            }
        }
        Float => {
            if !value.is_number() {
                f.type_errors.push(unconvertible("float64"));
            }
        }
        Strs => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(&format!("{name}[{i}]"), item, Str, f);
                }
            }
            other => f.type_errors.push(format!(
                "'{name}': source data must be an array or slice, got {}",
                go_kind(other)
            )),
        },
        Objs => {
            if !value.is_array() {
                f.type_errors.push(format!(
                    "'{name}': source data must be an array or slice, got {}",
                    go_kind(value)
                ));
            }
        }
        StrMap | AnyObj | Obj(_) => match value {
            Value::Object(map) => match kind {
                StrMap => {
                    for (k, v) in map {
                        check_value(&format!("{name}[{k}]"), v, Str, f);
                    }
                }
                Obj(table) => check_struct(&format!("{name}."), map, table, f),
                _ => {}
            },
            other => f
                .type_errors
                .push(format!("'{name}' expected a map, got '{}'", go_kind(other))),
        },
    }
}

/// The error `builder.build` returns for one file, or None when it decodes.
/// Multi-line in Consul; here on one line (`\n\t* ` becomes ` * `).
pub fn file_error(path: &str, f: &Findings) -> Option<String> {
    if !f.type_errors.is_empty() {
        // mapstructure.Error
        return Some(format!(
            "failed to parse {path}: {} error(s) decoding: {}",
            f.type_errors.len(),
            f.type_errors
                .iter()
                .map(|e| format!("* {e}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if !f.unused.is_empty() {
        // go-multierror's format
        let n = f.unused.len();
        return Some(format!(
            "failed to parse {path}: {n} error{} occurred: {}",
            if n == 1 { "" } else { "s" },
            f.unused
                .iter()
                .map(|k| format!("* invalid config key {k}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    None
}

/// Consul's `Merge`: `over` onto `base`. Objects merge key by key, arrays
/// append, anything else is replaced (a JSON null leaves the value as is,
/// like a nil pointer).
pub fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (_, Value::Null) => {}
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            (Some(Value::Array(b)), Value::Array(o)) => b.extend(o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// A value after the one-element-array hook, for reading merged settings.
pub fn scalar(v: Option<&Value>) -> Option<&Value> {
    match v? {
        Value::Array(items) if items.len() <= 1 => items.first(),
        Value::Null => None,
        other => Some(other),
    }
}

/// Go's `base64.StdEncoding.DecodeString` error text, or the decoded length.
/// The offset follows Go's rule closely enough for the common cases (a bad
/// character: its index; a bad length or padding: where the last, incomplete
/// quantum starts).
pub fn decode_base64_len(s: &str) -> Result<usize, String> {
    let bytes = s.as_bytes();
    let valid = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let pad_at = bytes.iter().position(|&c| c == b'=');
    let body_end = pad_at.unwrap_or(bytes.len());
    for (i, &c) in bytes[..body_end].iter().enumerate() {
        if !valid(c) && c != b'\r' && c != b'\n' {
            return Err(format!("illegal base64 data at input byte {i}"));
        }
    }
    let body: Vec<u8> = bytes[..body_end]
        .iter()
        .copied()
        .filter(|c| *c != b'\r' && *c != b'\n')
        .collect();
    let pads = bytes.len() - body_end;
    if bytes[body_end..].iter().any(|&c| c != b'=')
        || pads > 2
        || !(body.len() + pads).is_multiple_of(4)
        || (pads > 0 && body.len() % 4 == 1)
    {
        let at = (body.len() / 4) * 4;
        return Err(format!("illegal base64 data at input byte {at}"));
    }
    let full = body.len() / 4 * 3;
    Ok(match body.len() % 4 {
        0 => full,
        2 => full + 1,
        3 => full + 2,
        _ => return Err(format!("illegal base64 data at input byte {}", body.len())),
    })
}

/// Checks `encrypt` the way Consul does: the builder's
/// `encrypt has invalid key: <base64 error>`, then memberlist's key size
/// rule when the keyring is set up (`key size must be 16, 24 or 32 bytes`).
pub fn check_encrypt(key: &str) -> Result<(), String> {
    let n = decode_base64_len(key).map_err(|e| format!("encrypt has invalid key: {e}"))?;
    if ![16, 24, 32].contains(&n) {
        return Err(format!(
            "Failed to configure keyring: key size must be 16, 24 or 32 bytes (encrypt decodes to {n} bytes)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(v: Value) -> Findings {
        check_object(v.as_object().unwrap())
    }

    #[test]
    fn nodeprep_files_pass() {
        for v in [
            json!({"client_addr": "127.0.0.1 169.254.1.1", "bind_addr": "192.0.2.10",
                   "ports": {"http": 8500, "dns": 8600}}),
            json!({"datacenter": "dc1", "server": true, "bootstrap_expect": 1}),
            json!({"datacenter": "dc1", "retry_join": ["10.0.0.10", "provider=aws tag_key=x"],
                   "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
                   "ui_config": {"enabled": true}, "node_name": "web-1"}),
            json!({"acl": {"enabled": true, "tokens": {"agent": "x"}}, "telemetry": {"anything": 1}}),
        ] {
            assert_eq!(findings(v.clone()), Findings::default(), "{v}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_consuls_message() {
        let f = findings(json!({"datacenter": "dc1", "bogus": 1, "ports": {"htp": 1}}));
        assert_eq!(f.unused, ["bogus", "ports.htp"]);
        assert_eq!(
            file_error("/consul/config/x.json", &f).unwrap(),
            "failed to parse /consul/config/x.json: 2 errors occurred: \
             * invalid config key bogus * invalid config key ports.htp"
        );
        let f = findings(json!({"ui_config": {"enabled": true, "colour": "red"}}));
        assert_eq!(
            file_error("a.json", &f).unwrap(),
            "failed to parse a.json: 1 error occurred: * invalid config key ui_config.colour"
        );
        // Keys inside objects the stand-in does not look into pass.
        assert!(findings(json!({"dns_config": {"whatever": 1}}))
            .unused
            .is_empty());
        // Warned about, not refused.
        let f = findings(json!({"acl_enforce_version_8": true, "acl_token": "t"}));
        assert!(f.unused.is_empty() && f.warnings.len() == 2, "{f:?}");
    }

    #[test]
    fn wrong_types_are_refused_with_mapstructures_message() {
        let f = findings(json!({"server": "yes"}));
        assert_eq!(
            file_error("agent.json", &f).unwrap(),
            "failed to parse agent.json: 1 error(s) decoding: \
             * 'server' expected type 'bool', got unconvertible type 'string', value: 'yes'"
        );
        let f = findings(json!({"bootstrap_expect": "1", "datacenter": 7,
                                "retry_join": "10.0.0.1", "ports": {"http": "8500"},
                                "node_meta": {"a": 1}, "ui_config": true}));
        let mut errs = f.type_errors.clone();
        errs.sort();
        assert_eq!(
            errs,
            [
                "'bootstrap_expect' expected type 'int', got unconvertible type 'string', value: '1'",
                "'datacenter' expected type 'string', got unconvertible type 'float64', value: '7'",
                "'node_meta[a]' expected type 'string', got unconvertible type 'float64', value: '1'",
                "'ports.http' expected type 'int', got unconvertible type 'string', value: '8500'",
                "'retry_join': source data must be an array or slice, got string",
                "'ui_config' expected a map, got 'bool'",
            ]
        );
        // A type error is reported before unknown keys (decode fails first).
        let f = findings(json!({"server": 1, "bogus": true}));
        assert!(file_error("f", &f).unwrap().contains("error(s) decoding"));
        // The one-element-array hook, numbers into ints, nulls.
        assert_eq!(
            findings(json!({"datacenter": ["dc1"], "bootstrap_expect": 1.0, "node_name": null})),
            Findings::default()
        );
        assert_eq!(
            findings(json!({"retry_join": ["a", 1]})).type_errors.len(),
            1
        );
    }

    #[test]
    fn merge_overrides_scalars_and_appends_slices() {
        let mut base =
            json!({"datacenter": "dc1", "retry_join": ["a"], "ports": {"http": 1, "dns": 2}})
                .as_object()
                .unwrap()
                .clone();
        merge(
            &mut base,
            json!({"datacenter": "dc2", "retry_join": ["b"], "ports": {"dns": 3}, "server": null})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            Value::Object(base),
            json!({"datacenter": "dc2", "retry_join": ["a", "b"], "ports": {"http": 1, "dns": 3}})
        );
    }

    #[test]
    fn encrypt_keys() {
        assert!(check_encrypt("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=").is_ok());
        assert!(check_encrypt("cg8StVXbQJ0gPvMd9o7yrg==").is_ok()); // 16 bytes
        assert!(check_encrypt("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_ok()); // 24 bytes
                                                                            // Consul's own test case (agent/config/runtime_test.go).
        assert_eq!(
            check_encrypt("this is not a valid key").unwrap_err(),
            "encrypt has invalid key: illegal base64 data at input byte 4"
        );
        assert_eq!(
            check_encrypt("abc").unwrap_err(),
            "encrypt has invalid key: illegal base64 data at input byte 0"
        );
        let e = check_encrypt("c2hvcnQ=").unwrap_err(); // "short": 5 bytes
        assert!(e.contains("key size must be 16, 24 or 32 bytes"), "{e}");
        assert_eq!(decode_base64_len("c2hvcnQ=").unwrap(), 5);
        assert_eq!(decode_base64_len("").unwrap(), 0);
    }
}
