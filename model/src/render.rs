//! Boot-time rendering: `Cluster + Member + Extras -> String`, pure.
//!
//! Every role ships its templates in `roles/<role>/templates/` (copied into
//! images at `/etc/haimg/templates/`, and embedded here as the defaults the
//! snapshots pin). [`context`] computes every derived value in Rust (peers,
//! priorities, the WiredTiger cache size, the app's
//! environment) so templates only place values; [`render`] fills a template
//! with it. Invariants: a template may only name values that exist (strict
//! undefined: a typo fails the render instead of producing an empty
//! directive); every string a template prints goes through the quoting
//! function of the template's language ([`crate::quote`], chosen by
//! [`TemplateInfo::lang`]), so no value can add a directive, and a value the
//! language cannot carry fails the render; numbers and booleans print as they
//! are; there is no filter that marks a value safe (the only filter is
//! `length`, which keeps the binary small); and no secret ever comes from the
//! plan — secrets arrive in [`Extras`] at boot.

use std::net::Ipv4Addr;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::quote::{self, Lang};
use crate::{Cluster, ExecMode, Member, Role, UpstreamHash, VrrpMode};

/// The init binary inside every image; keepalived calls it to check nginx.
pub const INIT_PATH: &str = "/sbin/init";
/// Runtime configs live on the tmpfs the init mounts at /run.
pub const RUN_DIR: &str = "/run/haimg";
pub const MONGO_DB_PATH: &str = "/var/lib/mongodb";
pub const MONGO_KEYFILE: &str = "/run/haimg/mongod/keyfile";
pub const WEBAPP_DIR: &str = "/srv/webapp";
pub const NODE_BIN: &str = "/opt/node/bin/node";
pub const PM2_HOME: &str = "/run/pm2";
/// lb: the rendered stray-handling ruleset (`vip.nft`), which the init loads.
pub const VIP_NFT: &str = "/run/haimg/vip/vip.nft";
/// lb: the nftables table and set `vip.nft` defines: `tcp` in the set opens
/// the copy window; the init gives it a timeout when keepalived enters
/// MASTER and none when it leaves.
pub const VIP_NFT_TABLE: &str = "haimg_vip";
pub const VIP_NFT_WINDOW_SET: &str = "window";
/// lb: how long after becoming master a holder copies strays to the other
/// lbs (before, as a backup, its window is open already). It covers what the old holder still answers after a planned move:
/// its in-flight requests and the idle keep-alive connections nginx closes
/// when the lb loses the VIP. After an unplanned failover it is also how
/// long a connection to the dead lb waits for its reset (a client
/// retransmits into the window, the first try after it is reset).
pub const VIP_STRAY_WINDOW_S: u32 = 10;

/// One boot-time template of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateInfo {
    pub role: Role,
    /// File name under `roles/<role>/templates/` and `/etc/haimg/templates/`.
    pub name: &'static str,
    /// Where the init writes the rendered file.
    pub target: &'static str,
    /// The file's language: every printed string is quoted for it.
    pub lang: Lang,
    /// The default template, as committed.
    pub source: &'static str,
}

/// Every template haimg-init renders, per role, in start order of the services that read them.
pub const TEMPLATES: [TemplateInfo; 5] = [
    TemplateInfo {
        role: Role::Lb,
        name: "nginx.conf",
        lang: Lang::Nginx,
        target: "/run/haimg/nginx/nginx.conf",
        source: include_str!("../../roles/lb/templates/nginx.conf"),
    },
    TemplateInfo {
        role: Role::Lb,
        name: "keepalived.conf",
        lang: Lang::Keepalived,
        target: "/run/haimg/keepalived/keepalived.conf",
        source: include_str!("../../roles/lb/templates/keepalived.conf"),
    },
    TemplateInfo {
        role: Role::Lb,
        name: "vip.nft",
        lang: Lang::Nft,
        target: VIP_NFT,
        source: include_str!("../../roles/lb/templates/vip.nft"),
    },
    TemplateInfo {
        role: Role::Mongo,
        name: "mongod.conf",
        lang: Lang::Yaml,
        target: "/run/haimg/mongod/mongod.conf",
        source: include_str!("../../roles/mongo/templates/mongod.conf"),
    },
    TemplateInfo {
        role: Role::Webapp,
        name: "ecosystem.config.js",
        lang: Lang::Js,
        target: "/run/haimg/pm2/ecosystem.config.js",
        source: include_str!("../../roles/webapp/templates/ecosystem.config.js"),
    },
];

pub fn templates_for(role: Role) -> impl Iterator<Item = &'static TemplateInfo> {
    TEMPLATES.iter().filter(move |t| t.role == role)
}

/// What the init knows at boot beyond the plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extras {
    /// `ImageInfo::input_hash` of the running image.
    pub image_hash: String,
    /// Memory the container may use (cgroup limit), MiB; `None` → the plan's `resources.memory_mb`.
    pub memory_mb: Option<u32>,
    /// mongo: a keyfile was delivered and written to [`MONGO_KEYFILE`].
    pub mongo_keyfile: bool,
    /// webapp: database user and password (HAIMG_DB_USER / HAIMG_DB_PASSWORD).
    pub db_credentials: Option<(String, String)>,
    /// lb: the cluster's VRRP password (HAIMG_VRRP_PASS), at most 8
    /// characters; required for VRRPv2 (an lb renders no keepalived.conf
    /// without it); unused by VRRPv3, which has no authentication.
    pub vrrp_pass: Option<String>,
    /// webapp: Next.js' server-actions key (HAIMG_NEXT_ACTIONS_KEY), passed
    /// to the app as `NEXT_SERVER_ACTIONS_ENCRYPTION_KEY`.
    pub next_actions_key: Option<String>,
}

impl Extras {
    /// Every secret as a visible placeholder: what the snapshots pin and
    /// `haimg-init render` checks a template with (never a real value).
    pub fn placeholders(image_hash: &str) -> Extras {
        Extras {
            image_hash: image_hash.into(),
            memory_mb: None,
            mongo_keyfile: true,
            db_credentials: Some(("app".into(), "APP-PASSWORD-PLACEHOLDER".into())),
            vrrp_pass: Some("VRRPPASS".into()),
            next_actions_key: Some("NEXT-ACTIONS-KEY-PLACEHOLDER".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: {detail}")]
    Template { name: String, detail: String },
    #[error("template {name} belongs to role {template_role}, not {member_role}")]
    WrongRole {
        name: String,
        template_role: Role,
        member_role: Role,
    },
    #[error("{slot} is not a member of the plan")]
    NotAMember { slot: String },
    #[error("HAIMG_VRRP_PASS must be 1 to 8 letters, digits or ._:/,+=-")]
    VrrpPass,
    #[error("HAIMG_VRRP_PASS is not set: an lb member needs the cluster's VRRP password, which `haimg deploy` delivers from the deploy host's secrets store")]
    VrrpPassMissing,
    #[error("template {name} is not one haimg knows, so there are no quoting rules for it")]
    Unknown { name: String },
}

#[derive(Serialize)]
struct Ctx {
    cluster: ClusterCtx,
    image: ImageCtx,
    member: MemberCtx,
    network: NetworkCtx,
    lb: Option<LbCtx>,
    mongo: Option<MongoCtx>,
    webapp: Option<WebappCtx>,
}

#[derive(Serialize)]
struct ClusterCtx {
    name: String,
    version: String,
}

#[derive(Serialize)]
struct ImageCtx {
    hash: String,
}

#[derive(Serialize)]
struct MemberCtx {
    role: Role,
    slot: String,
    hostname: String,
    ip: Ipv4Addr,
    vmid: u32,
    index: usize,
}

#[derive(Serialize)]
struct NetworkCtx {
    cidr: String,
    prefix: u8,
    gateway: Ipv4Addr,
    vip: Ipv4Addr,
}

#[derive(Serialize)]
struct Backend {
    slot: String,
    ip: Ipv4Addr,
    port: u16,
}

#[derive(Serialize)]
struct RateLimitCtx {
    zone: String,
    zone_size_mb: u32,
    rate_per_s: u32,
    burst: u32,
    status: u16,
}

#[derive(Serialize)]
struct TlsCtx {
    certificate: String,
    certificate_key: String,
}

#[derive(Serialize)]
struct KeepalivedCtx {
    instance: String,
    state: &'static str,
    priority: u8,
    interface: &'static str,
    virtual_router_id: u8,
    /// 2 or 3 ([`crate::Keepalived::vrrp_version`]).
    vrrp_version: u8,
    /// Decimal seconds ([`crate::Keepalived::advert_int`]).
    advert_int: String,
    unicast: bool,
    peers: Vec<Ipv4Addr>,
    /// VRRPv2 only (empty for v3, which has no authentication).
    auth_pass: String,
    /// `VIP/prefix`.
    vip: String,
    check_script: String,
}

/// `vip.nft`: what an lb does with packets for the VIP that belong to no
/// connection of its own.
#[derive(Serialize)]
struct VipMoveCtx {
    vip: Ipv4Addr,
    /// The other lb members, where strays are copied to.
    peers: Vec<Ipv4Addr>,
    window_s: u32,
    /// Whether copies are sent (see [`forwards_strays`]).
    forward: bool,
}

#[derive(Serialize)]
struct LbCtx {
    upstream_hash: &'static str,
    upstream: Vec<Backend>,
    max_fails: u32,
    fail_timeout_s: u32,
    listen_port: u16,
    tls: Option<TlsCtx>,
    rate_limit: RateLimitCtx,
    keepalived: KeepalivedCtx,
    vip_move: VipMoveCtx,
    /// What `/haimg/lb-health` answers: the slot and a newline.
    health_body: String,
}

#[derive(Serialize)]
struct MongoCtx {
    replica_set: String,
    port: u16,
    bind_ip: String,
    db_path: &'static str,
    memory_mb: u32,
    cache_size_gb: String,
    keyfile: Option<&'static str>,
}

#[derive(Serialize)]
struct WebappCtx {
    name: &'static str,
    script: String,
    cwd: &'static str,
    interpreter: &'static str,
    exec_mode: &'static str,
    instances: u32,
    max_memory_restart_mb: u32,
    kill_timeout_ms: u32,
    /// The app's environment, in a fixed order: haimg's variables, then the spec's `env`.
    env: Vec<(String, String)>,
}

/// The template context for one member.
fn context(cluster: &Cluster, member: &Member, extras: &Extras) -> Result<Ctx, RenderError> {
    if !cluster.members_of(member.role).contains(member) {
        return Err(RenderError::NotAMember {
            slot: member.slot.clone(),
        });
    }
    let net = &cluster.network;
    let memory_mb = extras
        .memory_mb
        .unwrap_or(cluster.resources_of(member.role).memory_mb);
    // Each role sees its own section only.
    let (lb, mongo, webapp) = match member.role {
        Role::Lb => (Some(lb_ctx(cluster, member, extras)?), None, None),
        Role::Mongo => (
            None,
            Some(mongo_ctx(cluster, member, extras, memory_mb)),
            None,
        ),
        Role::Webapp => (None, None, Some(webapp_ctx(cluster, member, extras))),
    };
    Ok(Ctx {
        cluster: ClusterCtx {
            name: cluster.name.clone(),
            version: cluster.version.clone(),
        },
        image: ImageCtx {
            hash: extras.image_hash.clone(),
        },
        member: MemberCtx {
            role: member.role,
            slot: member.slot.clone(),
            hostname: member.hostname.clone(),
            ip: member.ip,
            vmid: member.vmid,
            index: member.index,
        },
        network: NetworkCtx {
            cidr: net.cidr.to_string(),
            prefix: net.cidr.prefix,
            gateway: net.gateway,
            vip: net.vip,
        },
        lb,
        mongo,
        webapp,
    })
}

fn lb_ctx(cluster: &Cluster, member: &Member, extras: &Extras) -> Result<LbCtx, RenderError> {
    let lb = &cluster.lb;
    let n = &lb.nginx;
    let k = &lb.keepalived;
    // The other lb members: keepalived's unicast peers, and where vip.nft copies strays.
    let peers: Vec<Ipv4Addr> = lb
        .members
        .iter()
        .filter(|m| m.slot != member.slot)
        .map(|m| m.ip)
        .collect();
    let auth_pass = match &extras.vrrp_pass {
        _ if k.vrrp_version() == 3 => String::new(),
        Some(p) if valid_vrrp_pass(p) => p.clone(),
        Some(_) => return Err(RenderError::VrrpPass),
        None => return Err(RenderError::VrrpPassMissing),
    };
    Ok(LbCtx {
        upstream_hash: match n.upstream_hash {
            UpstreamHash::IpHash => "ip_hash",
            UpstreamHash::RemoteAddrConsistent => "remote_addr_consistent",
        },
        upstream: cluster
            .webapp
            .members
            .iter()
            .map(|m| Backend {
                slot: m.slot.clone(),
                ip: m.ip,
                port: cluster.webapp.port,
            })
            .collect(),
        max_fails: n.max_fails,
        fail_timeout_s: n.fail_timeout_s,
        listen_port: n.listen_port,
        tls: n.tls.as_ref().map(|t| TlsCtx {
            certificate: t.certificate.clone(),
            certificate_key: t.certificate_key.clone(),
        }),
        rate_limit: RateLimitCtx {
            zone: n.rate_limit.zone.clone(),
            zone_size_mb: n.rate_limit.zone_size_mb,
            rate_per_s: n.rate_limit.rate_per_s,
            burst: n.rate_limit.burst,
            status: n.rate_limit.status,
        },
        keepalived: KeepalivedCtx {
            instance: format!("{}_vip", cluster.name.replace('-', "_")),
            state: if member.slot == k.master {
                "MASTER"
            } else {
                "BACKUP"
            },
            // Invariant: validate() assigns a priority to every lb member.
            priority: cluster.lb_priority(member).unwrap_or(100),
            interface: "eth0",
            virtual_router_id: k.virtual_router_id,
            vrrp_version: k.vrrp_version(),
            advert_int: k.advert_int(),
            unicast: k.mode == VrrpMode::Unicast,
            peers: peers.clone(),
            auth_pass,
            vip: format!("{}/{}", cluster.network.vip, cluster.network.cidr.prefix),
            check_script: format!("{INIT_PATH} check-tcp 127.0.0.1:{}", n.listen_port),
        },
        vip_move: VipMoveCtx {
            vip: cluster.network.vip,
            peers,
            window_s: VIP_STRAY_WINDOW_S,
            forward: forwards_strays(cluster),
        },
        health_body: format!("{}\n", member.slot),
    })
}

/// Whether the new VIP holder copies strays to the other lbs: everywhere
/// but on Proxmox with haimg's firewall, whose `ipfilter` (on every lb, see
/// `backend::proxmox::policy`) drops packets a container sends from an
/// address not its own, as a copy of a client's packet is.
pub fn forwards_strays(cluster: &Cluster) -> bool {
    cluster.proxmox.endpoint.is_none() || !cluster.proxmox.firewall.enforce
}

/// What keepalived can carry ([`quote::keepalived`]) without a space.
fn valid_vrrp_pass(p: &str) -> bool {
    (1..=8).contains(&p.len())
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/,+=-".contains(c))
}

/// MongoDB's own default is max(0.25, (RAM - 1 GiB) / 2) GiB of *host* RAM;
/// inside a container the limit is what counts. In hundredths of a GiB,
/// rounded down (integer arithmetic keeps float formatting out of the init).
pub fn wiredtiger_cache_centi_gb(memory_mb: u32) -> u64 {
    let half_mb = u64::from(memory_mb).saturating_sub(1024) / 2;
    (half_mb * 100 / 1024).max(25)
}

fn mongo_ctx(cluster: &Cluster, member: &Member, extras: &Extras, memory_mb: u32) -> MongoCtx {
    let m = &cluster.mongo;
    MongoCtx {
        replica_set: m.replica_set.clone(),
        port: m.port,
        bind_ip: format!("{},127.0.0.1", member.ip),
        db_path: MONGO_DB_PATH,
        memory_mb,
        cache_size_gb: {
            let centi = wiredtiger_cache_centi_gb(memory_mb);
            format!("{}.{:02}", centi / 100, centi % 100)
        },
        keyfile: extras.mongo_keyfile.then_some(MONGO_KEYFILE),
    }
}

/// `mongodb://[user:pass@]h1:p,h2:p,h3:p/<db>?replicaSet=<rs>[&authSource=admin]`.
pub fn mongodb_uri(cluster: &Cluster, credentials: Option<&(String, String)>) -> String {
    let m = &cluster.mongo;
    let hosts: Vec<String> = m
        .members
        .iter()
        .map(|x| format!("{}:{}", x.ip, m.port))
        .collect();
    let (auth, source) = match credentials {
        Some((u, p)) => (
            format!("{}:{}@", percent_encode(u), percent_encode(p)),
            "&authSource=admin",
        ),
        None => (String::new(), ""),
    };
    // The database and the set name are validated, but `&`, `=`, `?` and `#`
    // are legal in a MongoDB database name: encoded, they stay one path segment
    // (the driver decodes it) and cannot add options to the query.
    format!(
        "mongodb://{auth}{}/{}?replicaSet={}{source}",
        hosts.join(","),
        percent_encode(&cluster.webapp.database),
        percent_encode(&m.replica_set)
    )
}

/// RFC 3986 unreserved characters stay, everything else is %XX (as the URI spec requires
/// for user, password, path segment and query value).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn webapp_ctx(cluster: &Cluster, member: &Member, extras: &Extras) -> WebappCtx {
    let w = &cluster.webapp;
    let mut env: Vec<(String, String)> = vec![
        ("NODE_ENV".into(), "production".into()),
        ("PORT".into(), w.port.to_string()),
        // Next's standalone server binds to $HOSTNAME.
        ("HOSTNAME".into(), member.ip.to_string()),
        (
            "MONGODB_URI".into(),
            mongodb_uri(cluster, extras.db_credentials.as_ref()),
        ),
        (
            "NODE_OPTIONS".into(),
            format!("--max-old-space-size={}", w.pm2.heap_mb),
        ),
        ("NEXT_TELEMETRY_DISABLED".into(), "1".into()),
        ("HAIMG_SLOT".into(), member.slot.clone()),
        ("HAIMG_VERSION".into(), cluster.version.clone()),
        ("HAIMG_IMAGE_HASH".into(), extras.image_hash.clone()),
    ];
    if let Some(k) = &extras.next_actions_key {
        // Next.js reads it at run time before the build's value
        // (`getActionEncryptionKey`: the variable, else the manifest's key).
        env.push(("NEXT_SERVER_ACTIONS_ENCRYPTION_KEY".into(), k.clone()));
    }
    env.extend(w.env.iter().cloned());
    WebappCtx {
        name: "webapp",
        script: format!("{WEBAPP_DIR}/server.js"),
        cwd: WEBAPP_DIR,
        interpreter: NODE_BIN,
        exec_mode: match w.pm2.exec_mode {
            ExecMode::Fork => "fork",
            ExecMode::Cluster => "cluster",
        },
        instances: w.pm2.instances,
        max_memory_restart_mb: w.pm2.max_memory_restart_mb,
        kill_timeout_ms: w.pm2.kill_timeout_ms,
        env,
    }
}

/// Render `source` (the text of template `name`) for `member`.
pub fn render(
    name: &str,
    source: &str,
    cluster: &Cluster,
    member: &Member,
    extras: &Extras,
) -> Result<String, RenderError> {
    if let Some(t) = TEMPLATES
        .iter()
        .find(|t| t.name == name && t.role != member.role)
    {
        return Err(RenderError::WrongRole {
            name: name.to_string(),
            template_role: t.role,
            member_role: member.role,
        });
    }
    let lang = TEMPLATES
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.lang)
        .ok_or_else(|| RenderError::Unknown {
            name: name.to_string(),
        })?;
    let ctx = context(cluster, member, extras)?;
    let err = |e: minijinja::Error| RenderError::Template {
        name: name.to_string(),
        detail: one_line(&e),
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Nothing may bypass the quoting: no `safe`, no HTML `escape`. minijinja's
    // `builtins` feature (some 60 more filters) stays off in a binary with a
    // 2 MB budget; the templates need `length` only.
    for f in ["safe", "escape", "e"] {
        env.remove_filter(f);
    }
    env.add_filter("length", filter_length);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(move |out, _state, value| write_quoted(out, lang, value));
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true);
    // Invariant: the default delimiters always build.
    env.set_syntax(syntax.build().map_err(err)?);
    let tmpl = env.template_from_named_str(name, source).map_err(err)?;
    // The context goes through serde_json::Value: minijinja's own serde support is
    // a second serializer in a binary with a 2 MB budget.
    let value = serde_json::to_value(&ctx).map_err(|e| RenderError::Template {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    tmpl.render(to_template_value(value)).map_err(err)
}

/// What `{{ value }}` prints: a number or boolean as it is, a string through
/// the language's quoting function, anything else is an error.
fn write_quoted(
    out: &mut minijinja::Output,
    lang: Lang,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let bad =
        |detail: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, detail);
    let text = match value.kind() {
        ValueKind::Number | ValueKind::Bool => value.to_string(),
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            match lang {
                Lang::Nginx => quote::nginx(s).map(|c| c.into_owned()),
                Lang::Keepalived => quote::keepalived(s).map(|c| c.into_owned()),
                Lang::Yaml => Ok(quote::yaml(s).into_owned()),
                Lang::Js => Ok(quote::js(s)),
                Lang::Lxc => quote::lxc(s).map(str::to_string),
                Lang::Nft => quote::nft(s),
                Lang::Pve => quote::pve(s).map(str::to_string),
            }
            .map_err(|e| bad(e.to_string()))?
        }
        k => return Err(bad(format!("cannot print a {k} value"))),
    };
    out.write_str(&text).map_err(|e| bad(e.to_string()))
}

/// Render a role's committed default template.
pub fn render_default(
    info: &TemplateInfo,
    cluster: &Cluster,
    member: &Member,
    extras: &Extras,
) -> Result<String, RenderError> {
    render(info.name, info.source, cluster, member, extras)
}

fn to_template_value(v: serde_json::Value) -> minijinja::Value {
    use minijinja::Value;
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(a) => {
            Value::from(a.into_iter().map(to_template_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(o) => Value::from(
            o.into_iter()
                .map(|(k, v)| (k, to_template_value(v)))
                .collect::<std::collections::BTreeMap<String, Value>>(),
        ),
    }
}

fn filter_length(v: minijinja::Value) -> Result<usize, minijinja::Error> {
    v.len().ok_or_else(|| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("cannot take the length of {}", v.kind()),
        )
    })
}

fn one_line(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(l) = e.line() {
        s.push_str(&format!(" (line {l})"));
    }
    s
}
