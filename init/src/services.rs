//! The services of each role, in start order, and the facts about the
//! rootfs they need (users from /etc/passwd, the cgroup memory limit).
//!
//! Pure: [`for_role`] turns the plan and the identity into
//! [`ServiceSpec`]s; paths are the ones agreed with the image build
//! (nginx and keepalived from Debian, mongod from mongodb-org-server, Node in
//! /opt/node, PM2 in /opt/pm2, the app in /srv/webapp). Readiness is a TCP
//! port; keepalived has none and counts as ready once spawned — it only
//! starts after nginx answers, so the VIP never lands on a node that cannot
//! serve it. Stop signals: nginx SIGQUIT (graceful), the rest SIGTERM
//! (pm2-runtime forwards it to the app and waits `kill_timeout`). Users:
//! nginx and keepalived start as root (nginx's workers drop to www-data;
//! keepalived manages the VIP), mongod as `mongodb`, PM2 and the app as the
//! unprivileged web app user (never root).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;

use haimg_model::render::{NODE_BIN, PM2_HOME};
use haimg_model::{Cluster, Role};

use crate::identity::Identity;
use crate::supervise::{Readiness, ServiceSpec, Sig};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";
pub const MONGOD: &str = "/usr/bin/mongod";
pub const PM2_RUNTIME: &str = "/opt/pm2/node_modules/pm2/bin/pm2-runtime";
const PATH: &str = "/opt/node/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Users the services run as, looked up in the image's /etc/passwd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    pub mongodb: Option<(u32, u32)>,
    /// The web app's user; `None` means the image's fixed ids.
    pub webapp: Option<(u32, u32)>,
}

impl Users {
    /// Read from an /etc/passwd text. A user mapped to uid or gid 0 is not
    /// taken: the services these users exist for must not run as root.
    pub fn from_passwd(passwd: &str) -> Users {
        let unprivileged = |u: Option<(u32, u32)>| u.filter(|(uid, gid)| *uid != 0 && *gid != 0);
        Users {
            mongodb: unprivileged(passwd_lookup(passwd, "mongodb")),
            webapp: unprivileged(passwd_lookup(passwd, haimg_model::image::WEBAPP_USER)),
        }
    }

    /// `(uid, gid)` of the web app: from /etc/passwd, else the image's fixed ids.
    pub fn webapp(&self) -> (u32, u32) {
        self.webapp.unwrap_or((
            haimg_model::image::WEBAPP_UID,
            haimg_model::image::WEBAPP_GID,
        ))
    }
}

fn base_env() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), PATH.into()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

/// On a halt, how long nginx serves on after keepalived stopped: keepalived
/// leaves with a priority-0 advert, the next backup takes the VIP after its
/// skew (under one advert interval, and under 1 s in VRRPv2 whatever the
/// interval; a fraction of the interval in VRRPv3), then its gratuitous ARPs
/// turn the clients to it. Until then clients still reach this lb, which
/// answers them from the VIP on `lo` (`crate::vip`); stopping nginx earlier
/// would refuse them.
pub fn vip_move_ms(cluster: &Cluster) -> u64 {
    let advert_ms = u64::from(cluster.lb.keepalived.advert_interval_ms);
    advert_ms.min(1000) + 500
}

/// The role's services in start order.
pub fn for_role(cluster: &Cluster, id: &Identity, users: &Users) -> Vec<ServiceSpec> {
    let local = |port: u16| {
        Readiness::Tcp(SocketAddr::V4(SocketAddrV4::new(
            [127, 0, 0, 1].into(),
            port,
        )))
    };
    match id.role {
        Role::Lb => vec![
            ServiceSpec {
                name: "nginx".into(),
                program: NGINX.into(),
                requires: vec![],
                args: vec![
                    "-c".into(),
                    "/run/haimg/nginx/nginx.conf".into(),
                    "-e".into(),
                    "stderr".into(),
                ],
                env: base_env(),
                user: None,
                ready: local(cluster.lb.nginx.listen_port),
                stop_signal: Sig::Quit,
                grace_ms: 3_000,
                linger_ms: 0,
            },
            ServiceSpec {
                name: "keepalived".into(),
                program: KEEPALIVED.into(),
                requires: vec![],
                args: [
                    "--dont-fork",
                    "--log-console",
                    "--vrrp",
                    "--use-file",
                    "/run/haimg/keepalived/keepalived.conf",
                    "--pid",
                    "/run/haimg/keepalived/keepalived.pid",
                    "--vrrp_pid",
                    "/run/haimg/keepalived/vrrp.pid",
                ]
                .map(String::from)
                .to_vec(),
                env: base_env(),
                user: None,
                ready: Readiness::Spawned,
                stop_signal: Sig::Term,
                grace_ms: 2_000,
                linger_ms: vip_move_ms(cluster),
            },
        ],
        Role::Mongo => vec![ServiceSpec {
            name: "mongod".into(),
            program: MONGOD.into(),
            requires: vec![],
            args: vec!["--config".into(), "/run/haimg/mongod/mongod.conf".into()],
            env: base_env(),
            user: users.mongodb,
            ready: local(cluster.mongo.port),
            stop_signal: Sig::Term,
            // On SIGTERM a primary steps down, waiting up to 15 s for a
            // secondary to catch up; mongod 5.0+ then spends what is left of
            // `shutdownTimeoutMillisForSignaledShutdown` (15 s, shared) in a
            // quiesce period before it closes the storage engine. Killing it
            // at 15 s would cut that close short: give it the budget plus
            // time for the final checkpoint. Proxmox's and the rollout's
            // container shutdown timeouts (60 s) stay above this.
            grace_ms: 40_000,
            linger_ms: 0,
        }],
        Role::Webapp => {
            let mut env = base_env();
            env.extend([
                ("PM2_HOME".into(), PM2_HOME.into()),
                ("HOME".into(), PM2_HOME.into()),
                ("NODE_ENV".into(), "production".into()),
            ]);
            vec![ServiceSpec {
                name: "pm2-runtime".into(),
                program: NODE_BIN.into(),
                requires: vec![PM2_RUNTIME.into()],
                args: vec![
                    PM2_RUNTIME.into(),
                    "start".into(),
                    "/run/haimg/pm2/ecosystem.config.js".into(),
                ],
                env,
                user: Some(users.webapp()),
                ready: Readiness::Tcp(SocketAddr::V4(SocketAddrV4::new(
                    id.member.ip,
                    cluster.webapp.port,
                ))),
                stop_signal: Sig::Term,
                grace_ms: u64::from(cluster.webapp.pm2.kill_timeout_ms) + 1_000,
                linger_ms: 0,
            }]
        }
    }
}

/// `(uid, gid)` of `user` in an /etc/passwd text.
pub fn passwd_lookup(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == user)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// The container's memory limit in MiB from cgroup v2 (`memory.max`) or v1
/// (`memory/memory.limit_in_bytes`) under `cgroup_root`; `None` when unlimited or unknown.
pub fn memory_limit_mb(cgroup_root: &Path) -> Option<u32> {
    let v2 = std::fs::read_to_string(cgroup_root.join("memory.max")).ok();
    let v1 = || std::fs::read_to_string(cgroup_root.join("memory/memory.limit_in_bytes")).ok();
    let text = v2.or_else(v1)?;
    let bytes: u64 = text.trim().parse().ok()?;
    // v1 reports "unlimited" as a huge page-aligned number.
    if bytes >= 1 << 50 {
        return None;
    }
    u32::try_from(bytes / (1024 * 1024)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx lingers for the backup's skew (at most one interval, at most
    /// 1 s) plus 0.5 s: 1.5 s for the seed and any slower v2 profile, 0.6 s
    /// for the 100 ms VRRPv3 profile.
    #[test]
    fn nginx_lingers_for_the_vip_move_of_the_profile() {
        let c = |patch: &str| {
            let text = haimg_model::DEFAULT_SPEC.replace("advert_int_s: 1", patch);
            haimg_model::spec::parse_yaml(&text).unwrap().cluster
        };
        assert_eq!(vip_move_ms(&c("advert_int_s: 1")), 1500);
        assert_eq!(vip_move_ms(&c("advert_int_s: 2")), 1500);
        assert_eq!(vip_move_ms(&c("advert_interval_ms: 100")), 600);
    }

    #[test]
    fn passwd() {
        let p = "root:x:0:0:root:/root:/bin/bash\nmongodb:x:101:65534::/home/mongodb:/usr/sbin/nologin\nbad:line\n";
        assert_eq!(passwd_lookup(p, "mongodb"), Some((101, 65534)));
        assert_eq!(passwd_lookup(p, "www-data"), None);
        assert_eq!(passwd_lookup(p, "bad"), None);
    }

    #[test]
    fn users_are_never_root() {
        let p = "root:x:0:0:root:/root:/bin/bash\nmongodb:x:0:0::/:/bin/sh\nwebapp:x:990:990::/nonexistent:/usr/sbin/nologin\n";
        let u = Users::from_passwd(p);
        assert_eq!(u.mongodb, None);
        assert_eq!(u.webapp(), (990, 990));
        let u = Users::from_passwd("webapp:x:1234:1235::/:/bin/false\n");
        assert_eq!(u.webapp(), (1234, 1235));
        assert_eq!(
            Users::from_passwd("webapp:x:0:990::/:/bin/false\n").webapp(),
            (990, 990)
        );
        assert_eq!(Users::default().webapp(), (990, 990));
    }

    #[test]
    fn cgroup_memory() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(memory_limit_mb(d.path()), None);
        std::fs::create_dir(d.path().join("memory")).unwrap();
        std::fs::write(
            d.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(memory_limit_mb(d.path()), None);
        std::fs::write(d.path().join("memory/memory.limit_in_bytes"), "268435456\n").unwrap();
        assert_eq!(memory_limit_mb(d.path()), Some(256));
        std::fs::write(d.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(memory_limit_mb(d.path()), None);
        std::fs::write(d.path().join("memory.max"), "2147483648\n").unwrap();
        assert_eq!(memory_limit_mb(d.path()), Some(2048));
    }
}

#[cfg(test)]
mod snapshots {
    use super::*;
    use crate::identity::Identity;

    /// The command lines, environments, readiness and stop settings of every role.
    #[test]
    fn service_tables() {
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        for role in Role::ALL {
            let m = c.members_of(role)[0].clone();
            let id = Identity {
                role,
                address: haimg_model::Ipv4Net {
                    addr: m.ip,
                    prefix: 24,
                },
                gateway: c.network.gateway,
                member: m,
                evidence: vec![],
                warnings: vec![],
            };
            let users = Users {
                mongodb: Some((101, 65534)),
                webapp: None,
            };
            insta::assert_json_snapshot!(format!("services-{role}"), for_role(&c, &id, &users));
        }
    }
}
