//! Request parameters built from a [`ContainerSpec`]: pure, snapshot-tested.
//!
//! Only parameters of the official schema (`tests/fixtures/pve/pve-api-subset.json`)
//! appear here, with form booleans as `0`/`1`. `env`, `entrypoint` and
//! `net0.host-managed` are written only when the spec carries them, and the
//! deploy fills them only for Proxmox >= 9.1 (older releases answer 400
//! "property is not defined in schema").
//!
//! Choices, each for a reason:
//! * `start=0`: start is a separate task whose errors the create UPID does not cover.
//! * `unprivileged=1` explicit (the schema says default 0, the code 1).
//! * no `features`: haimg-init is not systemd and needs no nesting, and a token
//!   may set no other feature flag.
//! * `ostype=debian`: the images ship Debian's `/etc/os-release` and
//!   `/etc/debian_version`, so Proxmox writes `/etc/network/interfaces`,
//!   `/etc/hosts` and `/etc/hostname`, which the init reads on releases before 9.1.
//! * `cmode=console`: PID 1 is not a getty; `pct console` shows its output.

use haimg_model::quote::{self, Unquotable};
use haimg_model::secrets;

use super::client::Params;
use crate::backend::ContainerSpec;

/// `POST /nodes/{node}/lxc`. `firewall`: Proxmox's firewall filters net0
/// (`proxmox.firewall.enforce`; the rules come from the network policy).
/// Every value inside a property string or list goes through
/// [`quote::pve`]: one that Proxmox would split is an error, not a property.
pub fn create(
    spec: &ContainerSpec,
    rootfs_storage: &str,
    firewall: bool,
) -> Result<Params, Unquotable> {
    let rootfs_storage = quote::pve(rootfs_storage)?;
    let mut p = Params::new()
        .add("vmid", spec.vmid)
        .add("ostemplate", &spec.template.volid)
        .add("hostname", &spec.hostname)
        .add("ostype", "debian")
        .add("arch", "amd64")
        .flag("unprivileged", true)
        .add("cores", spec.cores)
        .add("memory", spec.memory_mb)
        .add("rootfs", format!("{rootfs_storage}:{}", spec.rootfs_gb));
    if let (Some(gb), Some(mount)) = (spec.data_volume_gb, &spec.data_mount) {
        let mount = quote::pve(mount)?;
        p = p.add("mp0", format!("{rootfs_storage}:{gb},mp={mount},backup=1"));
    }
    p = p.add("net0", net0(spec, firewall)?);
    if !spec.nameservers.is_empty() {
        let ns: Vec<String> = spec.nameservers.iter().map(|n| n.to_string()).collect();
        p = p.add("nameserver", ns.join(" "));
    }
    if let Some(d) = &spec.search_domain {
        p = p.add("searchdomain", d);
    }
    p = p
        .add("cmode", "console")
        .flag("onboot", spec.onboot)
        .flag("start", false)
        .add("tags", tag_list(&spec.tags)?)
        .add("description", description(spec));
    if !spec.env.is_empty() {
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        p = p.add("env", env.join("\0"));
    }
    if let Some(e) = &spec.entrypoint {
        p = p.add("entrypoint", e);
    }
    Ok(p)
}

/// `name=eth0,bridge=…,hwaddr=…,ip=…/24,gw=…,type=veth[,firewall=1][,host-managed=1]`.
/// `firewall=1` must be there when the interface is plugged: it puts the veth
/// behind a firewall bridge (`pve-container:src/PVE/LXC.pm`, `net_tap_plug`).
pub fn net0(spec: &ContainerSpec, firewall: bool) -> Result<String, Unquotable> {
    let mut s = format!(
        "name=eth0,bridge={},hwaddr={},ip={}/{},gw={},type=veth",
        quote::pve(&spec.bridge)?,
        quote::pve(&spec.hwaddr)?,
        spec.ip,
        spec.prefix,
        spec.gateway
    );
    if firewall {
        s.push_str(",firewall=1");
    }
    if spec.host_managed {
        s.push_str(",host-managed=1");
    }
    Ok(s)
}

/// Shown in the Proxmox GUI; not visible inside the container.
fn description(spec: &ContainerSpec) -> String {
    format!(
        "haimg {} member {} (CT {}), from {}.\nManaged by haimg: changes here are replaced by the next rollout.",
        spec.role, spec.slot, spec.vmid, spec.template.filename
    )
}

/// `PUT /nodes/{node}/lxc/{vmid}/config` for tags.
pub fn tags(tags: &[String]) -> Result<Params, Unquotable> {
    Ok(Params::new().add("tags", tag_list(tags)?))
}

/// `PUT …/config` of a promotion or demotion: the tags and `onboot`.
pub fn tags_onboot(tags: &[String], onboot: bool) -> Result<Params, Unquotable> {
    Ok(Params::new()
        .add("tags", tag_list(tags)?)
        .flag("onboot", onboot))
}

/// `PUT …/config` converging drift: each in-place setting to its wanted value.
pub fn reconfigure(drift: &[crate::backend::Drift]) -> Result<Params, Unquotable> {
    let mut p = Params::new();
    for d in drift.iter().filter(|d| d.in_place) {
        p = p.add(&d.key, &d.want);
    }
    Ok(p)
}

/// The settings [`crate::backend::Backend::drift`] compares, as `create`
/// sends them: (key, wanted value, changeable in place).
pub fn settings(
    spec: &ContainerSpec,
    firewall: bool,
) -> Result<Vec<(&'static str, String, bool)>, Unquotable> {
    Ok(vec![
        ("hostname", spec.hostname.clone(), true),
        ("cores", spec.cores.to_string(), true),
        ("memory", spec.memory_mb.to_string(), true),
        ("net0", net0(spec, firewall)?, true),
        (
            "onboot",
            if spec.onboot { "1" } else { "0" }.to_string(),
            true,
        ),
        ("tags", tag_list(&spec.tags)?, true),
        // A volume's size: growing or shrinking it is a new member.
        ("rootfs", format!("size={}G", spec.rootfs_gb), false),
    ])
}

/// Tags joined the way Proxmox splits them (`;`), each checked not to split.
fn tag_list(tags: &[String]) -> Result<String, Unquotable> {
    let checked: Result<Vec<&str>, _> = tags.iter().map(|t| quote::pve(t)).collect();
    Ok(checked?.join(";"))
}

/// Param names whose values never appear in output.
const SECRET_PARAMS: [&str; 2] = ["password", "ssh-public-keys"];

/// A copy of `p` fit for printing: secret values replaced by `<redacted>`,
/// `env` shown one `KEY=VALUE` per `\0`. What counts as secret is the spec
/// check's own rule ([`haimg_model::secrets`]): a secret-looking name hides
/// its value; any value is scanned for URL passwords, PEM blocks and tokens.
pub fn redacted(p: &Params) -> Params {
    let mut out = Params::new();
    for (k, v) in &p.0 {
        let shown = if SECRET_PARAMS.contains(&k.as_str()) || secrets::is_secret_name(k) {
            secrets::REDACTED.to_string()
        } else if k == "env" {
            v.split('\0')
                .map(|kv| match kv.split_once('=') {
                    Some((name, _)) if secrets::is_secret_name(name) => {
                        format!("{name}={}", secrets::REDACTED)
                    }
                    Some((name, value)) => format!("{name}={}", secrets::redact(value)),
                    None => secrets::redact(kv).into_owned(),
                })
                .collect::<Vec<_>>()
                .join("\\0")
        } else {
            secrets::redact(v).into_owned()
        };
        out = out.add(k, shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_secret_values_only() {
        let p = Params::new()
            .add("vmid", 100)
            .add("password", "hunter22")
            .add(
                "env",
                "HAIMG_ROLE=lb\0DB_PASSWORD=s3cret\0API_TOKEN=abc\0HAIMG_IP=192.168.30.100/24\0HAIMG_DB_PASS=pw1\0HAIMG_MONGO_KEY=k3y\0HAIMG_VRRP_PASS=vr\0SESSION_KEY=sk\0REPORTS=mongodb://admin:pw2@h/r",
            )
            .add("description", "from https://u:pw3@example.org/x");
        let shown = redacted(&p).encode();
        for secret in [
            "hunter22", "s3cret", "abc", "pw1", "k3y", "=vr", "=sk", "pw2", "pw3",
        ] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        insta::assert_snapshot!(
            redacted(&p).0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
            @r"
        vmid=100
        password=<redacted>
        env=HAIMG_ROLE=lb\0DB_PASSWORD=<redacted>\0API_TOKEN=<redacted>\0HAIMG_IP=192.168.30.100/24\0HAIMG_DB_PASS=<redacted>\0HAIMG_MONGO_KEY=<redacted>\0HAIMG_VRRP_PASS=<redacted>\0SESSION_KEY=<redacted>\0REPORTS=mongodb://admin:<redacted>@h/r
        description=from https://u:<redacted>@example.org/x
        "
        );
    }

    #[test]
    fn property_values_that_would_split_are_refused() {
        let mut spec = ContainerSpec {
            vmid: 100,
            node: "pve1".into(),
            hostname: "nginx1".into(),
            role: haimg_model::Role::Lb,
            slot: "nginx1".into(),
            template: crate::backend::StoredTemplate {
                volid: "local:vztmpl/haimg-lb_1.0.0_amd64.tar.zst".into(),
                filename: "haimg-lb_1.0.0_amd64.tar.zst".into(),
                size: 1,
            },
            ip: "192.168.30.100".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.30.1".parse().unwrap(),
            bridge: "vmbr0".into(),
            hwaddr: "BC:24:11:30:01:00".into(),
            nameservers: vec![],
            search_domain: None,
            cores: 1,
            memory_mb: 256,
            rootfs_gb: 2,
            data_volume_gb: None,
            data_mount: None,
            tags: vec!["haimg".into()],
            env: vec![],
            onboot: false,
            entrypoint: None,
            host_managed: false,
        };
        assert!(net0(&spec, true).is_ok());
        spec.bridge = "vmbr0,firewall=0".into();
        assert_eq!(
            net0(&spec, true).unwrap_err().to_string(),
            "a value cannot be written into a Proxmox property string: ',' at character 6 (Proxmox splits property strings and lists on it)"
        );
        assert!(tags(&["a;b".to_string()]).is_err());
        assert!(tags(&["haimg".to_string(), "slot-nginx1".to_string()]).is_ok());
    }
}
