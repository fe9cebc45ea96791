//! The files Proxmox VE writes into a Debian container's rootfs before every
//! start, rendered byte for byte as pve-container 6.1 does
//! (`PVE::LXC::Setup::Base` / `Debian`: `setup_network`, `set_hostname`,
//! `set_dns`, `ct_modify_file`).
//!
//! The renderers are pure: existing file content in, new content out (`None`:
//! leave the file alone). [`apply`] does the I/O, like Proxmox's pre-start
//! hook: `/fastboot`, `/etc/network/interfaces`, `/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`, honouring `.pve-ignore.<name>` files.
//! Invariants: the rootfs is untrusted, so no symlink inside it is ever
//! followed (a symlinked `etc` or `etc/network` is an error, a symlinked file
//! is replaced, as Proxmox's write-then-rename replaces it); files are
//! written whole (temp file + rename), mode 0644, owned by host root (the
//! container's root through the idmapped rootfs).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const HEAD: &str = "# --- BEGIN PVE ---\n";
const TAIL: &str = "# --- END PVE ---\n";

/// What Proxmox knows about a container when it writes these files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PveInput {
    /// The `hostname` option (may contain dots).
    pub hostname: String,
    /// net0: interface name, static address, prefix, gateway.
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The `nameserver` option, if set (space-separated list).
    pub nameserver: Option<String>,
    /// The `searchdomain` option, if set.
    pub searchdomain: Option<String>,
    /// The host's own resolv.conf, used for whichever of the two is unset.
    pub host_dns: HostDns,
}

/// `search` and the first three `nameserver`s of the host's resolv.conf, as
/// `PVE::INotify::read_etc_resolv_conf` reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    pub search: Option<String>,
    pub nameservers: Vec<String>,
}

impl HostDns {
    pub fn parse(text: &str) -> HostDns {
        let mut dns = HostDns::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let first = words.next();
            let starts_flush = line.starts_with(|c: char| !c.is_whitespace());
            match first {
                Some("search" | "domain") if starts_flush => {
                    if let Some(w) = words.next() {
                        dns.search = Some(w.to_string());
                    }
                }
                Some("nameserver") => {
                    if let Some(ns) = words.next().filter(|w| w.parse::<IpAddr>().is_ok()) {
                        if dns.nameservers.len() < 3 {
                            dns.nameservers.push(ns.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        dns
    }
}

/// Files Proxmox would leave in the rootfs, relative paths → content.
pub type Rendered = BTreeMap<&'static str, Option<String>>;

/// Why the files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PveFilesError {
    #[error("unable to read version info from {path} (Proxmox refuses ostype=debian without /etc/debian_version)")]
    NoDebianVersion { path: PathBuf },
    #[error("unable to parse version info {version:?} in {path}")]
    BadDebianVersion { path: PathBuf, version: String },
    #[error("container Debian version {version} is too old (Proxmox needs at least 4)")]
    TooOld { version: u32 },
    #[error("refusing to write through symlink {path} inside the rootfs")]
    Symlink { path: PathBuf },
    #[error("failed to write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The Debian major version from `/etc/debian_version`'s first line
/// (`PVE::LXC::Setup::Debian::new`).
pub fn debian_major(first_line: &str) -> Option<u32> {
    let v = match first_line {
        "stretch/sid" => "9.1",
        "buster/sid" => "10",
        "bullseye/sid" => "11",
        "bookworm/sid" => "12",
        "trixie/sid" => "13",
        "forky/sid" => "14",
        "duke/sid" => "15",
        "kali-rolling" => "12",
        other => other,
    };
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `PVE::Tools::split_list`: NUL-separated if there is a NUL, else on `,;` and whitespace.
fn split_list(s: &str) -> Vec<String> {
    if s.contains('\0') {
        return s.split('\0').map(str::to_string).collect();
    }
    s.replace([',', ';'], " ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Perl's `split(/\n/, $text)`: trailing empty fields dropped.
fn perl_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.split('\n').map(str::to_string).collect();
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

/// `/^#\s*---\s*<word>\s*PVE\s*/`, the word and PVE case-insensitive when `ci`.
fn is_marker(line: &str, word: &str, ci: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if ci {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let Some(rest) = line.strip_prefix('#') else {
        return false;
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix("---") else {
        return false;
    };
    let rest = rest.trim_start();
    if rest.len() < word.len() || !eq(&rest[..word.len()], word) {
        return false;
    }
    let rest = rest[word.len()..].trim_start();
    rest.len() >= 3 && rest.is_char_boundary(3) && eq(&rest[..3], "PVE")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modify {
    Append,
    Replace,
}

/// `ct_modify_file`: put `data` between PVE markers. `existing` is `None` when
/// the file does not exist. Returns the new content, or `None` to leave it.
pub fn modify_file(existing: Option<&str>, data: &str, mode: Modify) -> Option<String> {
    let mut data = data.to_string();
    if !data.is_empty() && !data.ends_with('\n') {
        data.push('\n');
    }
    let Some(old) = existing else {
        return (!data.is_empty()).then(|| format!("{HEAD}{data}{TAIL}"));
    };
    let mut lines = perl_lines(old);
    let beg = lines.iter().position(|l| is_marker(l, "BEGIN", false));
    let end = beg.and_then(|b| (b..lines.len()).find(|&i| is_marker(&lines[i], "END", true)));
    match (beg, end) {
        (Some(b), Some(e)) => {
            // Proxmox chomps the tail only when there is data (a quirk kept as is).
            let tail = if data.is_empty() {
                TAIL
            } else {
                TAIL.trim_end_matches('\n')
            };
            lines.splice(b..=e, [format!("{HEAD}{data}{tail}")]);
            Some(lines.join("\n") + "\n")
        }
        _ if !data.is_empty() => {
            let mut content = lines.join("\n");
            if content.ends_with('\n') {
                content.pop();
            }
            content.push('\n');
            let section = format!("{HEAD}{data}{TAIL}");
            Some(match mode {
                Modify::Replace => section,
                Modify::Append => content + &section,
            })
        }
        _ => None,
    }
}

/// `remove_pve_sections`: drop from the first BEGIN line to the last END line.
fn remove_pve_sections(text: &str) -> String {
    let h = |l: &str| l.trim_start_matches([' ', '\t']).to_string();
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(b) = lines.iter().position(|l| h(l).starts_with(HEAD.trim_end())) else {
        return text.to_string();
    };
    let Some(e) = (b + 1..lines.len())
        .rev()
        .find(|&i| h(lines[i]).starts_with(TAIL.trim_end()))
    else {
        return text.to_string();
    };
    let mut out: Vec<&str> = lines[..b].to_vec();
    out.push("");
    out.extend_from_slice(&lines[e + 1..]);
    out.join("\n")
}

/// `/^\h*<prefix>\h+/m`
fn has_entry(text: &str, prefix: &str) -> bool {
    text.split('\n').any(|l| {
        l.trim_start_matches([' ', '\t'])
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with([' ', '\t']))
    })
}

/// (searchdomains, nameserver) as `lookup_dns_conf` picks them.
fn lookup_dns(inp: &PveInput) -> (Option<String>, String) {
    let search = inp
        .searchdomain
        .clone()
        .or_else(|| inp.host_dns.search.clone());
    let ns = inp
        .nameserver
        .clone()
        .unwrap_or_else(|| inp.host_dns.nameservers.join(" "));
    (search, ns)
}

/// `/etc/hostname`: the name up to the first dot.
pub fn hostname_file(inp: &PveInput) -> String {
    format!("{}\n", namepart(&hostname_or_default(inp)))
}

fn hostname_or_default(inp: &PveInput) -> String {
    if inp.hostname.is_empty() {
        "localhost".into()
    } else {
        inp.hostname.clone()
    }
}

fn namepart(h: &str) -> &str {
    h.split_once('.').map_or(h, |(n, _)| n)
}

/// `/etc/hosts` (`update_etc_hosts`).
pub fn hosts_file(existing: Option<&str>, inp: &PveInput) -> Option<String> {
    let name = hostname_or_default(inp);
    let short = namepart(&name);
    let (search, _) = lookup_dns(inp);
    let all_names = if name.contains('.') {
        format!("{name} {short}")
    } else {
        let mut v: Vec<String> = split_list(search.as_deref().unwrap_or(""))
            .iter()
            .map(|d| format!("{name}.{d}"))
            .collect();
        v.push(name.clone());
        v.join(" ")
    };
    let lo4 = "127.0.0.1 localhost.localnet localhost\n";
    let lo6 = "::1 localhost.localnet localhost\n";
    let mut section = String::new();
    match existing {
        Some(text) => {
            let rest = remove_pve_sections(text);
            if !has_entry(&rest, "127.0.0.1") {
                section += lo4;
            }
            if !has_entry(&rest, "::1") {
                section += lo6;
            }
        }
        None => {
            section += lo4;
            section += lo6;
        }
    }
    section += &format!("{} {all_names}\n", inp.ip);
    modify_file(existing, &section, Modify::Append)
}

/// `/etc/resolv.conf` (`set_dns`, replace mode).
pub fn resolv_conf(existing: Option<&str>, inp: &PveInput) -> Option<String> {
    let (search, ns) = lookup_dns(inp);
    let mut data = String::new();
    if let Some(s) = search.filter(|s| !s.is_empty() && s != "0") {
        data += &format!("search {}\n", split_list(&s).join(" "));
    }
    for n in split_list(&ns) {
        data += &format!("nameserver {n}\n");
    }
    modify_file(existing, &data, Modify::Replace)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

struct Section {
    family: Family,
    ifname: String,
    attr: Vec<String>,
}

struct NetV4 {
    cidr: String,
    address: Ipv4Addr,
    netmask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    needs_route: bool,
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// `/etc/network/interfaces` (`PVE::LXC::Setup::Debian::setup_network`) for
/// one static IPv4 interface.
pub fn interfaces_file(existing: Option<&str>, debian_major: u32, inp: &PveInput) -> String {
    let mask = prefix_mask(inp.prefix);
    let mut nets = BTreeMap::new();
    nets.insert(
        inp.ifname.clone(),
        NetV4 {
            cidr: format!("{}/{}", inp.ip, inp.prefix),
            address: inp.ip,
            netmask: Ipv4Addr::from(mask),
            gateway: inp.gateway,
            needs_route: inp
                .gateway
                .is_some_and(|g| u32::from(g) & mask != u32::from(inp.ip) & mask),
        },
    );
    Interfaces {
        nets,
        cidr_form: debian_major >= 10,
        out: String::new(),
        done_auto: BTreeSet::new(),
        done_v4: BTreeSet::new(),
    }
    .render(existing)
}

struct Interfaces {
    nets: BTreeMap<String, NetV4>,
    cidr_form: bool,
    out: String,
    done_auto: BTreeSet<String>,
    done_v4: BTreeSet<String>,
}

/// `iface <name> inet|inet6 <method>` → (name, is_v6).
fn iface_line(line: &str) -> Option<(String, bool)> {
    let mut w = line.split_whitespace();
    if w.next()? != "iface" {
        return None;
    }
    let name = w.next()?.to_string();
    let fam = w.next()?;
    w.next()?;
    if w.next().is_some() {
        return None;
    }
    match fam {
        "inet" => Some((name, false)),
        "inet6" => Some((name, true)),
        _ => None,
    }
}

impl Interfaces {
    fn render(mut self, existing: Option<&str>) -> String {
        let mut section: Option<Section> = None;
        if let Some(text) = existing {
            let mut lines: Vec<&str> = text.split('\n').collect();
            if text.ends_with('\n') {
                lines.pop();
            }
            for line in lines {
                if line.starts_with("# --- BEGIN PVE ---") || line.starts_with("# --- END PVE ---")
                {
                    if let Some(s) = section.as_mut() {
                        s.attr.push(line.to_string());
                    }
                    continue;
                }
                if line.starts_with('#') {
                    self.out += &format!("{line}\n");
                    continue;
                }
                if line.trim().is_empty() {
                    if section.is_some() {
                        self.print(section.take());
                    } else {
                        self.out += &format!("{line}\n");
                    }
                    continue;
                }
                if let Some((ifname, v6)) = iface_line(line) {
                    self.print(section.take());
                    if !self.nets.contains_key(&ifname) {
                        self.out += &format!("{line}\n");
                        continue;
                    }
                    let family = if v6 { Family::V6 } else { Family::V4 };
                    section = Some(Section {
                        family,
                        ifname,
                        attr: Vec::new(),
                    });
                    continue;
                }
                let trimmed = line.trim_start();
                if let Some(rest) = trimmed.strip_prefix("auto") {
                    for iface in rest.split_whitespace() {
                        self.done_auto.insert(iface.to_string());
                    }
                    self.print(section.take());
                    self.out += &format!("{line}\n");
                    continue;
                }
                let delimiter = ["mapping", "source", "source-directory"].iter().any(|k| {
                    trimmed
                        .strip_prefix(k)
                        .is_some_and(|r| r.starts_with(char::is_whitespace))
                }) || trimmed.starts_with("allow-");
                if delimiter {
                    self.print(section.take());
                    self.out += &format!("{line}\n");
                    continue;
                }
                if let Some(s) = section.as_mut() {
                    if let Some((aname, _)) = trimmed.split_once(char::is_whitespace) {
                        if !["address", "netmask", "gateway", "broadcast"].contains(&aname) {
                            s.attr.push(trimmed.to_string());
                        }
                        continue;
                    }
                }
                self.out += &format!("{line}\n");
            }
            self.print(section.take());
        }

        let mut need_separator = !self.out.is_empty() && !self.out.ends_with("\n\n");
        let names: Vec<String> = self.nets.keys().cloned().collect();
        for ifname in names {
            if !self.done_v4.contains(&ifname) {
                if need_separator {
                    self.out.push('\n');
                    need_separator = false;
                }
                self.print(Some(Section {
                    family: Family::V4,
                    ifname,
                    attr: Vec::new(),
                }));
            }
        }
        if !self.done_auto.contains("lo") {
            self.out = format!(
                "auto lo\niface lo inet loopback\niface lo inet6 loopback\n\n{}",
                self.out
            );
        }
        self.out
    }

    fn print(&mut self, section: Option<Section>) {
        let Some(mut s) = section else {
            return;
        };
        if self.done_auto.insert(s.ifname.clone()) {
            self.out += &format!("auto {}\n", s.ifname);
        }
        if s.family == Family::V6 {
            // No IPv6 configured: Proxmox drops the stanza.
            return;
        }
        self.done_v4.insert(s.ifname.clone());
        let net = &self.nets[&s.ifname];
        let mut o = format!("iface {} inet static\n", s.ifname);
        if self.cidr_form {
            o += &format!("\taddress {}\n", net.cidr);
        } else {
            o += &format!("\taddress {}\n\tnetmask {}\n", net.address, net.netmask);
        }
        remove_gateway_scripts(&mut s.attr);
        if let Some(gw) = net.gateway {
            if net.needs_route {
                let i = &s.ifname;
                o += &format!(
                    "# --- BEGIN PVE ---\n\tpost-up ip route add {gw} dev {i}\n\tpost-up ip route add default via {gw} dev {i}\n\tpre-down ip route del default via {gw} dev {i}\n\tpre-down ip route del {gw} dev {i}\n# --- END PVE ---\n"
                );
            } else {
                o += &format!("\tgateway {gw}\n");
            }
        }
        for a in &s.attr {
            o += &format!("\t{a}\n");
        }
        o.push('\n');
        self.out += &o;
    }
}

/// Drop the gateway route scripts Proxmox added earlier (marked, or the
/// four-line legacy form).
fn remove_gateway_scripts(attr: &mut Vec<String>) {
    let mut found = false;
    let mut keep = true;
    attr.retain(|a| {
        if a == "# --- BEGIN PVE ---" {
            found = true;
            keep = false;
            false
        } else if a == "# --- END PVE ---" {
            found = true;
            keep = true;
            false
        } else {
            keep
        }
    });
    if found {
        return;
    }
    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }
    let mut i = 0;
    while i + 3 < attr.len() {
        let legacy = match words(&attr[i])[..] {
            ["post-up", "ip", "route", "add", ip, "dev", dev] => {
                words(&attr[i + 1])
                    == [
                        "post-up", "ip", "route", "add", "default", "via", ip, "dev", dev,
                    ]
                    && words(&attr[i + 2])
                        == [
                            "pre-down", "ip", "route", "del", "default", "via", ip, "dev", dev,
                        ]
                    && words(&attr[i + 3]) == ["pre-down", "ip", "route", "del", ip, "dev", dev]
            }
            _ => false,
        };
        if legacy {
            attr.drain(i..i + 4);
        } else {
            i += 1;
        }
    }
}

/// Render every file Proxmox writes at start, given the current contents
/// (`None`: absent). Keys are paths inside the rootfs.
pub fn render(
    current: &BTreeMap<&'static str, Option<String>>,
    debian_major: u32,
    inp: &PveInput,
) -> Rendered {
    let cur = |p: &str| current.get(p).and_then(|c| c.as_deref());
    let mut out = Rendered::new();
    out.insert("fastboot", Some(String::new()));
    out.insert(
        "etc/network/interfaces",
        Some(interfaces_file(
            cur("etc/network/interfaces"),
            debian_major,
            inp,
        )),
    );
    out.insert("etc/hosts", hosts_file(cur("etc/hosts"), inp));
    out.insert("etc/hostname", Some(hostname_file(inp)));
    out.insert("etc/resolv.conf", resolv_conf(cur("etc/resolv.conf"), inp));
    out
}

/// The files [`render`] reads, in the order Proxmox writes them.
pub const FILES: [&str; 5] = [
    "fastboot",
    "etc/network/interfaces",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

/// Write the files into `rootfs` like Proxmox's pre-start hook. Returns the
/// paths written.
pub fn apply(rootfs: &Path, inp: &PveInput) -> Result<Vec<PathBuf>, PveFilesError> {
    let dv_path = rootfs.join("etc/debian_version");
    let first = read_nofollow(rootfs, "etc/debian_version")?
        .and_then(|t| t.lines().next().map(str::to_string))
        .ok_or_else(|| PveFilesError::NoDebianVersion {
            path: dv_path.clone(),
        })?;
    let major = debian_major(&first).ok_or_else(|| PveFilesError::BadDebianVersion {
        path: dv_path,
        version: first.clone(),
    })?;
    if major < 4 {
        return Err(PveFilesError::TooOld { version: major });
    }
    let mut current = BTreeMap::new();
    for f in FILES {
        current.insert(f, read_nofollow(rootfs, f)?);
    }
    let rendered = render(&current, major, inp);
    let mut written = Vec::new();
    for f in FILES {
        let Some(Some(content)) = rendered.get(f) else {
            continue;
        };
        if is_ignored(rootfs, f)? {
            continue;
        }
        written.push(write_nofollow(rootfs, f, content)?);
    }
    Ok(written)
}

/// Resolve `rel`'s parent inside `rootfs`, refusing symlinked directories;
/// creates missing directories (0755) when `create`.
fn safe_parent(rootfs: &Path, rel: &str, create: bool) -> Result<Option<PathBuf>, PveFilesError> {
    let mut dir = rootfs.to_path_buf();
    let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
    for comp in parent.components() {
        dir.push(comp);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PveFilesError::Symlink { path: dir });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(PveFilesError::Io {
                    path: dir,
                    error: std::io::Error::other("not a directory"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dir)
                    .map_err(|error| PveFilesError::Io {
                        path: dir.clone(),
                        error,
                    })?;
            }
            Err(error) => return Err(PveFilesError::Io { path: dir, error }),
        }
    }
    Ok(Some(dir))
}

use std::os::unix::fs::DirBuilderExt;

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Content of a regular file in the rootfs; `None` if absent or a symlink.
fn read_nofollow(rootfs: &Path, rel: &str) -> Result<Option<String>, PveFilesError> {
    let Some(dir) = safe_parent(rootfs, rel, false)? else {
        return Ok(None);
    };
    let path = dir.join(file_name(rel));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => std::fs::read(&path)
            .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
            .map_err(|error| PveFilesError::Io { path, error }),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(PveFilesError::Io { path, error }),
    }
}

/// `ct_is_file_ignored`: an `.pve-ignore.<name>` beside the file.
fn is_ignored(rootfs: &Path, rel: &str) -> Result<bool, PveFilesError> {
    let Some(dir) = safe_parent(rootfs, rel, false)? else {
        return Ok(false);
    };
    let marker = dir.join(format!(".pve-ignore.{}", file_name(rel)));
    Ok(std::fs::symlink_metadata(marker).is_ok_and(|m| m.is_file()))
}

fn write_nofollow(rootfs: &Path, rel: &str, content: &str) -> Result<PathBuf, PveFilesError> {
    // `safe_parent(.., true)` always returns a directory.
    let dir = safe_parent(rootfs, rel, true)?.unwrap_or_else(|| rootfs.to_path_buf());
    let path = dir.join(file_name(rel));
    let tmp = dir.join(format!(".{}.haimg-tmp", file_name(rel)));
    let io = |error| PveFilesError::Io {
        path: path.clone(),
        error,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(content.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb1() -> PveInput {
        PveInput {
            hostname: "haimg-lb1".into(),
            ifname: "eth0".into(),
            ip: "192.168.30.100".parse().unwrap(),
            prefix: 24,
            gateway: Some("192.168.30.1".parse().unwrap()),
            nameserver: None,
            searchdomain: None,
            host_dns: HostDns {
                search: Some("lan".into()),
                nameservers: vec!["192.168.30.1".into()],
            },
        }
    }

    /// What Proxmox writes for a Debian template (with
    /// `auto lo`/`iface lo inet loopback`, no /etc/hosts, host search lan).
    #[test]
    fn proxmox_example_fresh_template() {
        let inp = lb1();
        let ifaces = interfaces_file(Some("auto lo\niface lo inet loopback\n"), 13, &inp);
        assert_eq!(
            ifaces,
            "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress 192.168.30.100/24\n\tgateway 192.168.30.1\n\n"
        );
        assert_eq!(
            hosts_file(None, &inp).unwrap(),
            "# --- BEGIN PVE ---\n127.0.0.1 localhost.localnet localhost\n::1 localhost.localnet localhost\n192.168.30.100 haimg-lb1.lan haimg-lb1\n# --- END PVE ---\n"
        );
        assert_eq!(
            resolv_conf(Some("nameserver 10.0.0.1\n"), &inp).unwrap(),
            "# --- BEGIN PVE ---\nsearch lan\nnameserver 192.168.30.1\n# --- END PVE ---\n"
        );
        assert_eq!(hostname_file(&inp), "haimg-lb1\n");
    }

    #[test]
    fn no_interfaces_file_gets_loopback_stanzas() {
        insta::assert_snapshot!(interfaces_file(None, 12, &lb1()), @r"
        auto lo
        iface lo inet loopback
        iface lo inet6 loopback

        auto eth0
        iface eth0 inet static
        	address 192.168.30.100/24
        	gateway 192.168.30.1
        ");
    }

    #[test]
    fn old_debian_gets_netmask_form() {
        let out = interfaces_file(None, 9, &lb1());
        assert!(
            out.contains(
                "\taddress 192.168.30.100\n\tnetmask 255.255.255.0\n\tgateway 192.168.30.1\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn existing_stanza_is_rewritten_other_lines_kept() {
        let old = "# my comment\nauto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n\nauto eth0\niface eth0 inet dhcp\n\thwaddress ether 02:00:00:00:00:01\n\taddress 10.0.0.5/8\n\tpost-up echo hi\n\niface eth0 inet6 auto\n\taccept_ra 1\n";
        insta::assert_snapshot!(interfaces_file(Some(old), 12, &lb1()), @r"
        # my comment
        auto lo
        iface lo inet loopback

        source /etc/network/interfaces.d/*

        auto eth0
        iface eth0 inet static
        	address 192.168.30.100/24
        	gateway 192.168.30.1
        	hwaddress ether 02:00:00:00:00:01
        	post-up echo hi
        ");
    }

    #[test]
    fn unreachable_gateway_gets_route_scripts_replaced_each_start() {
        let mut inp = lb1();
        inp.gateway = Some("10.1.1.1".parse().unwrap());
        let first = interfaces_file(None, 12, &inp);
        let second = interfaces_file(Some(&first), 12, &inp);
        assert_eq!(first, second);
        insta::assert_snapshot!(first, @r"
        auto lo
        iface lo inet loopback
        iface lo inet6 loopback

        auto eth0
        iface eth0 inet static
        	address 192.168.30.100/24
        # --- BEGIN PVE ---
        	post-up ip route add 10.1.1.1 dev eth0
        	post-up ip route add default via 10.1.1.1 dev eth0
        	pre-down ip route del default via 10.1.1.1 dev eth0
        	pre-down ip route del 10.1.1.1 dev eth0
        # --- END PVE ---
        ");
    }

    #[test]
    fn legacy_route_scripts_are_removed() {
        let old = "auto eth0\niface eth0 inet static\n\taddress 1.2.3.4/24\n\tpost-up ip route add 10.1.1.1 dev eth0\n\tpost-up ip route add default via 10.1.1.1 dev eth0\n\tpre-down ip route del default via 10.1.1.1 dev eth0\n\tpre-down ip route del 10.1.1.1 dev eth0\n\tmtu 1400\n";
        let out = interfaces_file(Some(old), 12, &lb1());
        assert_eq!(
            out,
            "auto lo\niface lo inet loopback\niface lo inet6 loopback\n\nauto eth0\niface eth0 inet static\n\taddress 192.168.30.100/24\n\tgateway 192.168.30.1\n\tmtu 1400\n\n"
        );
    }

    #[test]
    fn rendering_is_idempotent_across_starts() {
        let inp = lb1();
        let mut cur: BTreeMap<&'static str, Option<String>> = BTreeMap::new();
        cur.insert(
            "etc/hosts",
            Some("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into()),
        );
        cur.insert("etc/resolv.conf", Some("nameserver 127.0.0.53\n".into()));
        let first = render(&cur, 12, &inp);
        let cur2: BTreeMap<&'static str, Option<String>> =
            first.iter().map(|(k, v)| (*k, v.clone())).collect();
        let second = render(&cur2, 12, &inp);
        assert_eq!(first, second);
        insta::assert_snapshot!(first["etc/hosts"].as_deref().unwrap(), @r"
        127.0.0.1	localhost
        ::1	localhost ip6-localhost ip6-loopback
        # --- BEGIN PVE ---
        192.168.30.100 haimg-lb1.lan haimg-lb1
        # --- END PVE ---
        ");
    }

    #[test]
    fn hosts_section_replaced_in_place() {
        let old = "# --- BEGIN PVE ---\n10.0.0.1 old\n# --- END PVE ---\n10.9.9.9 keep\n";
        assert_eq!(
            hosts_file(Some(old), &lb1()).unwrap(),
            "# --- BEGIN PVE ---\n127.0.0.1 localhost.localnet localhost\n::1 localhost.localnet localhost\n192.168.30.100 haimg-lb1.lan haimg-lb1\n# --- END PVE ---\n10.9.9.9 keep\n"
        );
    }

    #[test]
    fn fqdn_hostname_and_explicit_dns() {
        let mut inp = lb1();
        inp.hostname = "nginx1.example.org".into();
        inp.nameserver = Some("192.168.30.1 192.168.30.2".into());
        inp.searchdomain = Some("a.example,b.example".into());
        assert_eq!(hostname_file(&inp), "nginx1\n");
        assert!(hosts_file(None, &inp)
            .unwrap()
            .contains("192.168.30.100 nginx1.example.org nginx1\n"));
        assert_eq!(
            resolv_conf(None, &inp).unwrap(),
            "# --- BEGIN PVE ---\nsearch a.example b.example\nnameserver 192.168.30.1\nnameserver 192.168.30.2\n# --- END PVE ---\n"
        );
    }

    #[test]
    fn no_search_domain_anywhere() {
        let mut inp = lb1();
        inp.host_dns = HostDns::parse("nameserver 10.255.255.53\n");
        inp.nameserver = Some("192.168.30.1".into());
        assert!(hosts_file(None, &inp)
            .unwrap()
            .contains("\n192.168.30.100 haimg-lb1\n"));
        assert_eq!(
            resolv_conf(None, &inp).unwrap(),
            "# --- BEGIN PVE ---\nnameserver 192.168.30.1\n# --- END PVE ---\n"
        );
    }

    #[test]
    fn host_resolv_conf_parsing() {
        let d = HostDns::parse("# x\ndomain corp\nsearch lan other\n nameserver 1.1.1.1\nnameserver fe80::1\nnameserver bogus\nnameserver 2.2.2.2\nnameserver 3.3.3.3\n");
        assert_eq!(d.search.as_deref(), Some("lan"));
        assert_eq!(d.nameservers, ["1.1.1.1", "fe80::1", "2.2.2.2"]);
    }

    #[test]
    fn modify_file_quirks() {
        assert_eq!(modify_file(None, "", Modify::Append), None);
        assert_eq!(modify_file(Some("a\n"), "", Modify::Append), None);
        assert_eq!(
            modify_file(Some(""), "x", Modify::Append).unwrap(),
            "\n# --- BEGIN PVE ---\nx\n# --- END PVE ---\n"
        );
        assert_eq!(
            modify_file(
                Some("a\n# --- BEGIN PVE ---\nold\n# --- END PVE ---\n"),
                "",
                Modify::Append
            )
            .unwrap(),
            "a\n# --- BEGIN PVE ---\n# --- END PVE ---\n\n"
        );
        assert_eq!(
            modify_file(Some("a\n#---begin PVE\n"), "x", Modify::Append).unwrap(),
            "a\n#---begin PVE\n# --- BEGIN PVE ---\nx\n# --- END PVE ---\n"
        );
    }

    #[test]
    fn debian_versions() {
        assert_eq!(debian_major("12.15"), Some(12));
        assert_eq!(debian_major("13.8"), Some(13));
        assert_eq!(debian_major("trixie/sid"), Some(13));
        assert_eq!(debian_major("9"), Some(9));
        assert_eq!(debian_major("buster"), None);
    }

    fn rootfs_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        d
    }

    #[test]
    fn apply_writes_all_files_and_honours_ignore() {
        let d = rootfs_with(&[
            ("etc/debian_version", "12.15\n"),
            ("etc/.pve-ignore.resolv.conf", ""),
            ("etc/resolv.conf", "nameserver 9.9.9.9\n"),
        ]);
        let written = apply(d.path(), &lb1()).unwrap();
        let rel: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "fastboot",
                "etc/network/interfaces",
                "etc/hosts",
                "etc/hostname"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/resolv.conf")).unwrap(),
            "nameserver 9.9.9.9\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/hostname")).unwrap(),
            "haimg-lb1\n"
        );
    }

    #[test]
    fn apply_refuses_symlinked_dirs_and_replaces_symlinked_files() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("hosts"), "host file\n").unwrap();
        let d = rootfs_with(&[("etc/debian_version", "12\n")]);
        std::os::unix::fs::symlink(outside.path().join("hosts"), d.path().join("etc/hosts"))
            .unwrap();
        apply(d.path(), &lb1()).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("hosts")).unwrap(),
            "host file\n"
        );
        assert!(std::fs::symlink_metadata(d.path().join("etc/hosts"))
            .unwrap()
            .is_file());

        let d2 = rootfs_with(&[("etc/debian_version", "12\n")]);
        std::os::unix::fs::symlink(outside.path(), d2.path().join("etc/network")).unwrap();
        let e = apply(d2.path(), &lb1()).unwrap_err();
        assert!(matches!(e, PveFilesError::Symlink { .. }), "{e}");
        assert!(!outside.path().join("interfaces").exists());
    }

    #[test]
    fn apply_without_debian_version_fails_like_proxmox() {
        let d = rootfs_with(&[("etc/os-release", "ID=debian\n")]);
        let e = apply(d.path(), &lb1()).unwrap_err().to_string();
        assert!(e.starts_with("unable to read version info from "), "{e}");
        let d = rootfs_with(&[("etc/debian_version", "sid-ish\n")]);
        let e = apply(d.path(), &lb1()).unwrap_err().to_string();
        assert!(
            e.starts_with("unable to parse version info \"sid-ish\""),
            "{e}"
        );
    }
}
