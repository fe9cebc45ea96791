//! What each role is, as facts on [`Role`]: every decision that depends on
//! the role asks one of these methods, and each method matches every role
//! without a wildcard, so a new role makes the compiler point at every fact
//! it has to answer (NOTES.md lists the files a new role touches).

use crate::{Cluster, Role};

impl Role {
    /// Holds the cluster's VIP (keepalived): its firewall must let the VIP's
    /// traffic through, and its health gate also asks through the VIP.
    pub fn holds_vip(self) -> bool {
        match self {
            Role::Lb => true,
            Role::Mongo | Role::Webapp => false,
        }
    }

    /// Where the role keeps data on a volume of its own (`mp0`), which a
    /// rollout hands from the old member to the new one; `None`: no data.
    pub fn data_mount(self) -> Option<&'static str> {
        match self {
            Role::Mongo => Some("/var/lib/mongodb"),
            Role::Lb | Role::Webapp => None,
        }
    }

    /// The size of its data volume in `cluster`, when it has one.
    pub fn data_volume_gb(self, cluster: &Cluster) -> Option<u32> {
        match self {
            Role::Mongo => Some(cluster.mongo.data_volume_gb),
            Role::Lb | Role::Webapp => None,
        }
    }

    /// Keeps data on a volume of its own ([`Role::data_mount`]).
    pub fn has_data_volume(self) -> bool {
        self.data_mount().is_some()
    }

    /// An upstream of nginx with passive health checks: after one of its
    /// members comes back, nginx keeps it out of rotation for `fail_timeout`.
    pub fn is_upstream(self) -> bool {
        match self {
            Role::Webapp => true,
            Role::Lb | Role::Mongo => false,
        }
    }

    /// Its members elect a primary (the replica set): the primary goes last in
    /// a rollout and steps down before its shutdown.
    pub fn elects_primary(self) -> bool {
        match self {
            Role::Mongo => true,
            Role::Lb | Role::Webapp => false,
        }
    }

    /// The HTTP path its health gate asks, or `None` when it is not HTTP
    /// (mongo answers over its wire protocol).
    pub fn health_path(self) -> Option<&'static str> {
        match self {
            Role::Lb => Some("/haimg/lb-health"),
            Role::Webapp => Some("/api/health"),
            Role::Mongo => None,
        }
    }

    /// The port its service listens on in `cluster`.
    pub fn port(self, cluster: &Cluster) -> u16 {
        match self {
            Role::Lb => cluster.lb.nginx.listen_port,
            Role::Mongo => cluster.mongo.port,
            Role::Webapp => cluster.webapp.port,
        }
    }

    /// How far behind the entry point the tier sits: the entry (the VIP's
    /// holders) 0, then each tier the one before it calls.
    pub fn depth(self) -> u8 {
        match self {
            Role::Lb => 0,
            Role::Webapp => 1,
            Role::Mongo => 2,
        }
    }

    /// Every role, from the entry inwards (the order of policies and tables).
    pub fn from_entry() -> [Role; 3] {
        let mut all = Role::ALL;
        all.sort_by_key(|r| r.depth());
        all
    }

    /// Its place in a rollout, lowest first: the deepest tier first (a new
    /// app may rely on a new database image, not the other way round), the
    /// entry tier last (so the VIP moves as few times as possible).
    pub fn rollout_rank(self) -> u8 {
        u8::MAX - self.depth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_answers_every_fact() {
        let c = crate::spec::parse_yaml(crate::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let facts: Vec<String> = Role::ALL
            .into_iter()
            .map(|r| {
                format!(
                    "{r}: vip={} data={:?} upstream={} primary={} health={:?} port={} depth={}",
                    r.holds_vip(),
                    r.data_mount(),
                    r.is_upstream(),
                    r.elects_primary(),
                    r.health_path(),
                    r.port(&c),
                    r.depth()
                )
            })
            .collect();
        assert_eq!(Role::from_entry(), [Role::Lb, Role::Webapp, Role::Mongo]);
        insta::assert_snapshot!(facts.join("\n"), @r#"
        lb: vip=true data=None upstream=false primary=false health=Some("/haimg/lb-health") port=80 depth=0
        mongo: vip=false data=Some("/var/lib/mongodb") upstream=false primary=true health=None port=27017 depth=2
        webapp: vip=false data=None upstream=true primary=false health=Some("/api/health") port=3000 depth=1
        "#);
    }
}
