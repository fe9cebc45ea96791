//! The tag scheme: Proxmox tags carry haimg's state, there is no state file.
//!
//! ```text
//! haimg                 owner mark: haimg created this container
//! cluster-<name>        which haimg cluster (several may share a Proxmox)
//! role-<role>           lb | mongo | webapp
//! slot-<slot>           the member's slot, e.g. slot-nginx1
//! ver-<version>         cluster.version of the template, e.g. ver-1.0.0
//! tpl-<sha12>           first 12 hex digits of the template's sha256
//! state-<state>         reserved for blue/green rollouts: state-live, state-standby
//! ```
//!
//! Every tag is `[a-z0-9_][a-z0-9_+.-]*` (Proxmox's tag pattern, lowercased);
//! the key is the text before the first `-`, so values may contain `-`.
//! Tags the user added in `cluster.tags` ride along and are kept as `extra`.

use haimg_model::Role;

pub const OWNER: &str = "haimg";

/// Blue/green position of a member (set by rollouts, issue 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Live,
    Standby,
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
    pub state: Option<State>,
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
        push("state", self.state.map(State::as_str));
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
                "state" if v == "live" => m.state = Some(State::Live),
                "state" if v == "standby" => m.state = Some(State::Standby),
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
            state: None,
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
