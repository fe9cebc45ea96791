//! Request validation against the official schema files, copied unmodified
//! from pve-docs (`api-viewer/apidata.js`, PVE 9.1 series):
//! `tests/fixtures/pve/pve-api-subset.json` (storage, containers, tasks) and
//! `tests/fixtures/pve/pve-api-firewall-ha.json` (the 77 methods under
//! `/cluster/firewall`, `/nodes/{node}/lxc/{vmid}/firewall` and `/cluster/ha`)
//! and `tests/fixtures/pve/pve-api-pools.json` (`/pools`, the run lease).
//!
//! Mirrors `pve-common:src/PVE/JSONSchema.pm` where haimg can trip over it:
//! unknown parameter (`additionalProperties: 0`), missing required parameter,
//! boolean only `0`/`1` in forms, integer ranges, enums, min and max lengths,
//! Perl patterns (anchored), the keys of property strings (`net0`, `rootfs`,
//! `mp0`, `log_ratelimit`) and the registered formats haimg's values go
//! through (`pve-common:src/PVE/JSONSchema.pm`, and pve-firewall's own in
//! `src/PVE/Firewall.pm`, checked by `super::firewall::check_format`).
//! Messages are Proxmox's own texts.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

pub struct Endpoint {
    pub method: String,
    /// `/nodes/{node}/lxc`
    pub path: String,
    pub schema: Value,
}

pub struct Schema {
    pub endpoints: Vec<Endpoint>,
    /// Parameters removed to model an older release (PVE < 9.1).
    pub hidden: Vec<String>,
}

pub const NOT_DEFINED: &str =
    "property is not defined in schema and the schema does not allow additional properties";

impl Schema {
    pub fn load() -> Schema {
        let mut endpoints = Vec::new();
        for file in [
            "pve-api-subset.json",
            "pve-api-firewall-ha.json",
            "pve-api-pools.json",
        ] {
            let p = format!("{}/tests/fixtures/pve/{file}", env!("CARGO_MANIFEST_DIR"));
            let v: Value = serde_json::from_slice(&std::fs::read(&p).expect("schema fixture"))
                .expect("schema json");
            endpoints.extend(
                v["endpoints"]
                    .as_array()
                    .expect("endpoints")
                    .iter()
                    .map(|e| Endpoint {
                        method: e["method"].as_str().unwrap().to_string(),
                        path: e["path"].as_str().unwrap().to_string(),
                        schema: e["schema"].clone(),
                    }),
            );
        }
        Schema {
            endpoints,
            hidden: Vec::new(),
        }
    }

    /// The parameter names of one endpoint.
    pub fn param_names(&self, method: &str, path: &str) -> Vec<String> {
        self.endpoints
            .iter()
            .find(|e| e.method == method && e.path == path)
            .and_then(|e| e.schema["parameters"]["properties"].as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Find the endpoint and the path parameters. `{volume}` takes the rest of
    /// the path (the content sub-router has `fragmentDelimiter => ''`).
    pub fn route(&self, method: &str, path: &str) -> Option<(&Endpoint, BTreeMap<String, String>)> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        'ep: for e in self.endpoints.iter().filter(|e| e.method == method) {
            let tpl: Vec<&str> = e.path.trim_matches('/').split('/').collect();
            let mut params = BTreeMap::new();
            for (i, t) in tpl.iter().enumerate() {
                // The content and IP set entry sub-routers have `fragmentDelimiter => ''`
                // (`Status.pm`, `IPSet.pm`): the last parameter takes the rest of the path.
                if (*t == "{volume}" || *t == "{cidr}") && i == tpl.len() - 1 && segs.len() > i {
                    params.insert(t[1..t.len() - 1].into(), segs[i..].join("/"));
                    return Some((e, params));
                }
                let Some(s) = segs.get(i) else { continue 'ep };
                if let Some(name) = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                    if s.is_empty() {
                        continue 'ep;
                    }
                    params.insert(name.to_string(), s.to_string());
                } else if t != s {
                    continue 'ep;
                }
            }
            if segs.len() == tpl.len() {
                return Some((e, params));
            }
        }
        None
    }

    /// Validate `params` (path params included); errors per parameter.
    pub fn validate(
        &self,
        e: &Endpoint,
        params: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let props = &e.schema["parameters"]["properties"];
        let mut errors = BTreeMap::new();
        for (k, v) in params {
            match self.prop(props, k) {
                None => {
                    errors.insert(k.clone(), NOT_DEFINED.to_string());
                }
                Some(p) => {
                    if let Err(m) = check_value(p, v) {
                        errors.insert(k.clone(), m);
                    }
                }
            }
        }
        if let Some(o) = props.as_object() {
            for (k, p) in o {
                let optional = p.get("optional").and_then(Value::as_i64).unwrap_or(0) == 1;
                if !optional
                    && !k.contains("[n]")
                    && !params.contains_key(k)
                    && !self.hidden.contains(k)
                {
                    errors.insert(
                        k.clone(),
                        "property is missing and it is not optional".into(),
                    );
                }
            }
        }
        errors
    }

    fn prop<'a>(&self, props: &'a Value, name: &str) -> Option<&'a Value> {
        if self.hidden.iter().any(|h| h == name) {
            return None;
        }
        if let Some(p) = props.get(name) {
            return Some(p);
        }
        // net0 -> net[n], mp12 -> mp[n]
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        if stem.len() < name.len() && !stem.is_empty() {
            return props.get(format!("{stem}[n]"));
        }
        None
    }
}

fn perl_regex(p: &str) -> Option<Regex> {
    let r = p.replace("(?^:", "(?:").replace("\\0", "\\x00");
    Regex::new(&format!("^(?:{r})$")).ok()
}

fn check_value(p: &Value, v: &str) -> Result<(), String> {
    let ty = p.get("type").and_then(Value::as_str).unwrap_or("string");
    match ty {
        "boolean" => {
            if v != "0" && v != "1" {
                return Err(format!("type check ('boolean') failed - got '{v}'"));
            }
        }
        "integer" => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{v}'"))?;
            if let Some(min) = p.get("minimum").and_then(Value::as_f64) {
                if (n as f64) < min {
                    return Err(format!("value must have a minimum value of {min}"));
                }
            }
            if let Some(max) = p.get("maximum").and_then(Value::as_f64) {
                if (n as f64) > max {
                    return Err(format!("value must have a maximum value of {max}"));
                }
            }
        }
        "number" => {
            v.parse::<f64>()
                .map_err(|_| format!("type check ('number') failed - got '{v}'"))?;
        }
        _ => {
            if let Some(min) = p.get("minLength").and_then(Value::as_u64) {
                if (v.chars().count() as u64) < min {
                    return Err(format!("value must be at least {min} characters long"));
                }
            }
            if let Some(max) = p.get("maxLength").and_then(Value::as_u64) {
                if v.len() as u64 > max {
                    return Err(format!("value may only be {max} characters long"));
                }
            }
            if let Some(en) = p.get("enum").and_then(Value::as_array) {
                let names: Vec<&str> = en.iter().filter_map(Value::as_str).collect();
                if !names.contains(&v) {
                    return Err(format!(
                        "value '{v}' does not have a value in the enumeration '{}'",
                        names.join(", ")
                    ));
                }
            }
            if let Some(pat) = p.get("pattern").and_then(Value::as_str) {
                if let Some(re) = perl_regex(pat) {
                    if !re.is_match(v) {
                        return Err("value does not match the regex pattern".into());
                    }
                }
            }
            match p.get("format") {
                Some(Value::Object(keys)) => check_property_string(keys, v)?,
                Some(Value::String(f)) => check_format(f, v)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// `key=value,key=value` with an optional default key (`[volume=]local:4,mp=/x`).
fn check_property_string(keys: &serde_json::Map<String, Value>, v: &str) -> Result<(), String> {
    let default_key = keys
        .iter()
        .find(|(_, p)| p.get("default_key").and_then(Value::as_i64) == Some(1))
        .map(|(k, _)| k.clone());
    let mut seen = Vec::new();
    for part in v.split(',') {
        let (k, val) = match part.split_once('=') {
            Some((k, val)) if keys.contains_key(k) => (k.to_string(), val),
            _ => match &default_key {
                Some(d) if !seen.contains(d) => (d.clone(), part),
                _ => {
                    return Err(format!(
                        "invalid format - {}: {NOT_DEFINED}",
                        part.split('=').next().unwrap_or(part)
                    ))
                }
            },
        };
        if seen.contains(&k) {
            return Err(format!(
                "invalid format - duplicate key in comma-separated list property: {k}"
            ));
        }
        let p = &keys[&k];
        let ok = match p.get("type").and_then(Value::as_str) {
            // parse_property_string accepts the boolean words here.
            Some("boolean") => matches!(
                val,
                "0" | "1" | "on" | "off" | "yes" | "no" | "true" | "false"
            ),
            _ => check_value(p, val).is_ok(),
        };
        if !ok {
            return Err(format!(
                "invalid format - {k}: value '{val}' does not match"
            ));
        }
        seen.push(k);
    }
    for (k, p) in keys {
        if p.get("optional").and_then(Value::as_i64).unwrap_or(0) != 1 && !seen.contains(k) {
            return Err(format!(
                "invalid format - {k}: property is missing and it is not optional"
            ));
        }
    }
    Ok(())
}

fn check_format(f: &str, v: &str) -> Result<(), String> {
    // `-list` formats: `split_list`, then each element (empty lists are allowed).
    if let Some(base) = f.strip_suffix("-list") {
        let sep = if v.contains('\0') {
            &['\0'][..]
        } else {
            &[',', ';', ' ', '\t', '\n'][..]
        };
        for item in v.split(sep).filter(|x| !x.is_empty()) {
            check_format(base, item)?;
        }
        return Ok(());
    }
    if let Some(r) = super::firewall::check_format(f, v) {
        return r;
    }
    let ok = match f {
        "pve-node" | "dns-name" => Regex::new(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)*$")
            .unwrap()
            .is_match(v),
        "pve-storage-id" => Regex::new(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$").unwrap().is_match(v),
        "pve-tag" => Regex::new(r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$").unwrap().is_match(v),
        "mac-addr" => {
            Regex::new(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$").unwrap().is_match(v)
                && u8::from_str_radix(&v[..2], 16).is_ok_and(|b| b & 1 == 0)
        }
        "ipv4" => v.parse::<std::net::Ipv4Addr>().is_ok(),
        "pve-ipv4-config" => {
            v == "dhcp"
                || v == "manual"
                || v.split_once('/').is_some_and(|(a, p)| {
                    a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
                })
        }
        "lxc-ip-with-ll-iface" => v.parse::<std::net::IpAddr>().is_ok(),
        // `pve_verify_configid`, `pve_verify_iface` (JSONSchema.pm).
        "pve-configid" => {
            return Regex::new(r"(?i)^[a-z][a-z0-9_-]+$")
                .unwrap()
                .is_match(v)
                .then_some(())
                .ok_or(format!("invalid configuration ID '{v}'"))
        }
        // pve-access-control `verify_poolname`.
        "pve-poolid" => {
            return (v.split('/').count() <= 3
                && Regex::new(r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$")
                    .unwrap()
                    .is_match(v))
            .then_some(())
            .ok_or(format!("pool name '{v}' contains invalid characters"))
        }
        "pve-iface" => {
            return Regex::new(r"(?i)^[a-z][a-z0-9_]{1,20}([:.]\d+)?$")
                .unwrap()
                .is_match(v)
                .then_some(())
                .ok_or(format!("invalid network interface name '{v}'"))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("value does not match the format '{f}'"))
    }
}
