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

use super::client::Params;
use crate::backend::ContainerSpec;

/// `POST /nodes/{node}/lxc`. `firewall`: Proxmox's firewall filters net0
/// (`proxmox.firewall.enforce`; the rules come from the network policy).
pub fn create(spec: &ContainerSpec, rootfs_storage: &str, firewall: bool) -> Params {
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
        p = p.add("mp0", format!("{rootfs_storage}:{gb},mp={mount},backup=1"));
    }
    p = p.add("net0", net0(spec, firewall));
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
        .add("tags", spec.tags.join(";"))
        .add("description", description(spec));
    if !spec.env.is_empty() {
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        p = p.add("env", env.join("\0"));
    }
    if let Some(e) = &spec.entrypoint {
        p = p.add("entrypoint", e);
    }
    p
}

/// `name=eth0,bridge=…,hwaddr=…,ip=…/24,gw=…,type=veth[,firewall=1][,host-managed=1]`.
/// `firewall=1` must be there when the interface is plugged: it puts the veth
/// behind a firewall bridge (`pve-container:src/PVE/LXC.pm`, `net_tap_plug`).
pub fn net0(spec: &ContainerSpec, firewall: bool) -> String {
    let mut s = format!(
        "name=eth0,bridge={},hwaddr={},ip={}/{},gw={},type=veth",
        spec.bridge, spec.hwaddr, spec.ip, spec.prefix, spec.gateway
    );
    if firewall {
        s.push_str(",firewall=1");
    }
    if spec.host_managed {
        s.push_str(",host-managed=1");
    }
    s
}

/// Shown in the Proxmox GUI; not visible inside the container.
fn description(spec: &ContainerSpec) -> String {
    format!(
        "haimg {} member {} (CT {}), from {}.\nManaged by haimg: changes here are replaced by the next rollout.",
        spec.role, spec.slot, spec.vmid, spec.template.filename
    )
}

/// `PUT /nodes/{node}/lxc/{vmid}/config` for tags.
pub fn tags(tags: &[String]) -> Params {
    Params::new().add("tags", tags.join(";"))
}

/// Param names whose values never appear in output.
const SECRET_PARAMS: [&str; 2] = ["password", "ssh-public-keys"];

/// Words that mark an env variable as a secret.
const SECRET_WORDS: [&str; 5] = ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// A copy of `p` fit for printing: secret values replaced by `<redacted>`,
/// `env` shown one `KEY=VALUE` per `\0`, secret-looking values redacted.
pub fn redacted(p: &Params) -> Params {
    let mut out = Params::new();
    for (k, v) in &p.0 {
        let shown = if SECRET_PARAMS.contains(&k.as_str()) {
            "<redacted>".to_string()
        } else if k == "env" {
            v.split('\0')
                .map(|kv| match kv.split_once('=') {
                    Some((name, _))
                        if SECRET_WORDS
                            .iter()
                            .any(|w| name.to_ascii_uppercase().contains(w)) =>
                    {
                        format!("{name}=<redacted>")
                    }
                    _ => kv.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\\0")
        } else {
            v.clone()
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
                "HAIMG_ROLE=lb\0DB_PASSWORD=s3cret\0API_TOKEN=abc\0HAIMG_IP=192.168.30.100/24",
            );
        let shown = redacted(&p).encode();
        assert!(
            !shown.contains("hunter22") && !shown.contains("s3cret") && !shown.contains("abc"),
            "{shown}"
        );
        insta::assert_snapshot!(
            redacted(&p).0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
            @r"
        vmid=100
        password=<redacted>
        env=HAIMG_ROLE=lb\0DB_PASSWORD=<redacted>\0API_TOKEN=<redacted>\0HAIMG_IP=192.168.30.100/24
        "
        );
    }
}
