//! The tag scheme: Proxmox tags carry haimg's state, there is no state file.
//!
//! ```text
//! haimg                 owner mark: haimg created this container
//! cluster-<name>        which haimg cluster (several may share a Proxmox)
//! role-<role>           lb | mongo | webapp
//! slot-<slot>           the member's slot, e.g. slot-nginx1
//! ver-<version>         cluster.version of the template, e.g. ver-1.0.0
//! tpl-<sha12>           first 12 hex digits of the template's sha256
//! sec-<hex8>            fingerprint of the secrets the member was started with
//!                       (`crate::secrets`; no value can be derived from it)
//! state-<state>         blue/green position: state-live, state-standby (none = live)
//! gen-<n>[-<id>]        rollout generation: n counts rollouts of the cluster, id
//!                       names the rollout's target (8 hex digits), see `crate::rollout`
//! ```
//!
//! Every tag is `[a-z0-9_][a-z0-9_+.-]*` (Proxmox's tag pattern, lowercased);
//! the key is the text before the first `-`, so values may contain `-`.
//! Tags the user added in `cluster.tags` ride along and are kept as `extra`.

use haimg_model::Role;

/// The owner mark, the one tag every backend knows.
pub const OWNER: &str = crate::backend::OWNER_TAG;

/// Blue/green position of a member (set by rollouts). A member without a
/// state tag (created by a plain deploy) counts as live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Live,
    Standby,
}

/// Which rollout created or last promoted a member: `n` orders rollouts,
/// `id` (8 hex digits) names the target they rolled to, so a resumed rollout
/// finds its own members again.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Gen {
    pub n: u32,
    pub id: Option<String>,
}

impl Gen {
    fn render(&self) -> String {
        match &self.id {
            Some(id) => format!("{}-{id}", self.n),
            None => self.n.to_string(),
        }
    }

    fn parse(v: &str) -> Option<Gen> {
        let (n, id) = match v.split_once('-') {
            Some((n, id)) if !id.is_empty() => (n, Some(id.to_string())),
            Some(_) => return None,
            None => (v, None),
        };
        Some(Gen {
            n: n.parse().ok()?,
            id,
        })
    }
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Live => "live",
            State::Standby => "standby",
        }
    }
}

/// What the tags of one container say.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct MemberTags {
    pub cluster: Option<String>,
    pub role: Option<Role>,
    pub slot: Option<String>,
    pub version: Option<String>,
    pub template: Option<String>,
    /// Fingerprint of the member's run-time secrets.
    pub secrets: Option<String>,
    pub state: Option<State>,
    /// Rollout generation; `None` for members of the first deploy (generation 0).
    pub gen: Option<Gen>,
    /// Tags outside the scheme, in order.
    pub extra: Vec<String>,
}

impl MemberTags {
    /// The tags to write, `haimg` first, then the scheme's order, then extras.
    pub fn render(&self) -> Vec<String> {
        let mut out = vec![OWNER.to_string()];
        let mut push = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.push(format!("{k}-{}", v.to_ascii_lowercase()));
            }
        };
        push("cluster", self.cluster.as_deref());
        push("role", self.role.map(Role::as_str));
        push("slot", self.slot.as_deref());
        push("ver", self.version.as_deref());
        push("tpl", self.template.as_deref());
        push("sec", self.secrets.as_deref());
        push("state", self.state.map(State::as_str));
        push("gen", self.gen.as_ref().map(Gen::render).as_deref());
        for e in &self.extra {
            let e = e.to_ascii_lowercase();
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }

    /// Read tags back; `None` when the `haimg` owner mark is missing.
    pub fn parse<S: AsRef<str>>(tags: &[S]) -> Option<MemberTags> {
        let tags: Vec<String> = tags
            .iter()
            .map(|t| t.as_ref().to_ascii_lowercase())
            .collect();
        if !tags.iter().any(|t| t == OWNER) {
            return None;
        }
        let mut m = MemberTags::default();
        for t in tags.iter().filter(|t| *t != OWNER) {
            let (k, v) = t.split_once('-').unwrap_or((t, ""));
            let v = v.to_string();
            match k {
                "cluster" if !v.is_empty() => m.cluster = Some(v),
                "role" if Role::parse(&v).is_some() => m.role = Role::parse(&v),
                "slot" if !v.is_empty() => m.slot = Some(v),
                "ver" if !v.is_empty() => m.version = Some(v),
                "tpl" if !v.is_empty() => m.template = Some(v),
                "sec" if !v.is_empty() => m.secrets = Some(v),
                "state" if v == "live" => m.state = Some(State::Live),
                "state" if v == "standby" => m.state = Some(State::Standby),
                "gen" if Gen::parse(&v).is_some() => m.gen = Gen::parse(&v),
                _ => m.extra.push(t.clone()),
            }
        }
        Some(m)
    }

    /// Same member and same template: nothing to redeploy.
    pub fn same_deployment(&self, other: &MemberTags) -> bool {
        self.cluster == other.cluster
            && self.role == other.role
            && self.slot == other.slot
            && self.version == other.version
            && self.template == other.template
            && self.secrets == other.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MemberTags {
        MemberTags {
            cluster: Some("haimg".into()),
            role: Some(Role::Lb),
            slot: Some("nginx1".into()),
            version: Some("1.0.0-RC1".into()),
            template: Some("0123456789ab".into()),
            secrets: None,
            state: None,
            gen: None,
            extra: vec!["prod".into()],
        }
    }

    #[test]
    fn renders_in_scheme_order() {
        insta::assert_snapshot!(sample().render().join(";"), @"haimg;cluster-haimg;role-lb;slot-nginx1;ver-1.0.0-rc1;tpl-0123456789ab;prod");
    }

    #[test]
    fn round_trips_in_any_order_and_case() {
        let mut tags = sample().render();
        tags.reverse();
        tags.push("state-standby".into());
        let back = MemberTags::parse(&tags).unwrap();
        let mut want = sample();
        want.version = Some("1.0.0-rc1".into());
        want.state = Some(State::Standby);
        assert_eq!(back, want);
        assert!(back.same_deployment(&want));
    }

    #[test]
    fn generations_round_trip_with_and_without_id() {
        let mut m = sample();
        m.state = Some(State::Live);
        m.gen = Some(Gen {
            n: 12,
            id: Some("0a1b2c3d".into()),
        });
        let tags = m.render();
        insta::assert_snapshot!(tags.join(";"), @"haimg;cluster-haimg;role-lb;slot-nginx1;ver-1.0.0-rc1;tpl-0123456789ab;state-live;gen-12-0a1b2c3d;prod");
        let back = MemberTags::parse(&tags).unwrap();
        assert_eq!(back.gen, m.gen);
        let plain = MemberTags::parse(&["haimg", "gen-3"]).unwrap();
        assert_eq!(plain.gen, Some(Gen { n: 3, id: None }));
        // Not a generation: kept as an extra tag, never guessed.
        let odd = MemberTags::parse(&["haimg", "gen-x", "gen-3-"]).unwrap();
        assert_eq!(odd.gen, None);
        assert_eq!(odd.extra, vec!["gen-x", "gen-3-"]);
    }

    #[test]
    fn foreign_containers_have_no_haimg_tags() {
        assert_eq!(MemberTags::parse(&["web", "prod"]), None);
        assert_eq!(MemberTags::parse::<&str>(&[]), None);
    }

    #[test]
    fn rendered_tags_match_the_proxmox_pattern() {
        for t in sample().render() {
            let ok = t
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_+.-".contains(c));
            assert!(ok, "{t}");
        }
    }
}
