//! What each part of haimg needs from the host, as data: the programs (and
//! the Debian package of each), the files that only a package provides, and
//! the packages the setup installs. `make setup` installs exactly
//! [`setup_packages`] (a test keeps the Makefile's list equal to it), so a
//! program added here without its package in the setup fails that test, and
//! a package dropped from the setup fails the fresh-host stage of CI.

use serde::Serialize;

/// A part of haimg with its own host prerequisites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// `haimg build` and `haimg lock --update`.
    Build,
    /// `haimg deploy` to local LXC, `haimg test` and `haimg down`.
    Deploy,
    /// `make test`: build and deploy, plus the test suite's own tools.
    Test,
}

impl Need {
    pub const ALL: [Need; 3] = [Need::Build, Need::Deploy, Need::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Need::Build => "build",
            Need::Deploy => "deploy",
            Need::Test => "test",
        }
    }

    /// The needs this one includes (`test` builds and deploys too).
    pub fn expand(needs: &[Need]) -> Vec<Need> {
        let mut v: Vec<Need> = needs
            .iter()
            .flat_map(|n| match n {
                Need::Test => vec![Need::Build, Need::Deploy, Need::Test],
                n => vec![*n],
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A program haimg (or its test suite) runs.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    pub need: Need,
    pub why: &'static str,
}

/// Rust comes from rustup, not from a Debian package.
pub const RUSTUP: &str = "rustup";
/// Installed by the user before `make` can run at all (README).
pub const PREREQUISITE: &str = "make";

pub const TOOLS: &[Tool] = &[
    Tool {
        program: "cargo",
        package: RUSTUP,
        need: Need::Build,
        why: "compiles haimg-init",
    },
    Tool {
        program: "cc",
        package: "gcc",
        need: Need::Build,
        why: "links Rust programs",
    },
    Tool {
        program: "mmdebstrap",
        package: "mmdebstrap",
        need: Need::Build,
        why: "makes the root filesystems",
    },
    Tool {
        program: "apt-get",
        package: "apt",
        need: Need::Build,
        why: "resolves the locks, runs in mmdebstrap",
    },
    Tool {
        program: "apt-cache",
        package: "apt",
        need: Need::Build,
        why: "reads package metadata for the locks",
    },
    Tool {
        program: "gpgv",
        package: "gpgv",
        need: Need::Build,
        why: "apt checks release file signatures",
    },
    Tool {
        program: "dpkg-deb",
        package: "dpkg",
        need: Need::Build,
        why: "reads .deb control data",
    },
    Tool {
        program: "strip",
        package: "binutils",
        need: Need::Build,
        why: "strips the node binary",
    },
    Tool {
        program: "unshare",
        package: "util-linux",
        need: Need::Build,
        why: "the webapp's offline build, the namespace probes",
    },
    Tool {
        program: "lxc-start",
        package: "lxc",
        need: Need::Deploy,
        why: "starts the containers",
    },
    Tool {
        program: "lxc-info",
        package: "lxc",
        need: Need::Deploy,
        why: "reads container state",
    },
    Tool {
        program: "lxc-stop",
        package: "lxc",
        need: Need::Deploy,
        why: "stops the containers",
    },
    Tool {
        program: "lxc-attach",
        package: "lxc",
        need: Need::Deploy,
        why: "runs commands in containers",
    },
    Tool {
        program: "newuidmap",
        package: "uidmap",
        need: Need::Deploy,
        why: "maps ids of unprivileged containers",
    },
    Tool {
        program: "newgidmap",
        package: "uidmap",
        need: Need::Deploy,
        why: "maps ids of unprivileged containers",
    },
    Tool {
        program: "ip",
        package: "iproute2",
        need: Need::Deploy,
        why: "bridge, veths, network namespace",
    },
    Tool {
        program: "nft",
        package: "nftables",
        need: Need::Deploy,
        why: "the network policy on the bridge",
    },
    Tool {
        program: "tar",
        package: "tar",
        need: Need::Deploy,
        why: "unpacks templates",
    },
    Tool {
        program: "zstd",
        package: "zstd",
        need: Need::Deploy,
        why: "tar decompresses .tar.zst with it",
    },
    Tool {
        program: "umount",
        package: "mount",
        need: Need::Deploy,
        why: "unmounts what a container left",
    },
    Tool {
        program: "curl",
        package: "curl",
        need: Need::Deploy,
        why: "the command deploy prints to reach the VIP",
    },
    Tool {
        program: "make",
        package: PREREQUISITE,
        need: Need::Test,
        why: "runs make test",
    },
    Tool {
        program: "gpg",
        package: "gnupg",
        need: Need::Test,
        why: "signs the test's vendor apt repository",
    },
];

/// A file that only a package provides (a library, a key ring, data).
#[derive(Debug, Clone, Copy)]
pub struct PackageFile {
    pub path: &'static str,
    pub package: &'static str,
    pub need: Need,
    pub why: &'static str,
}

pub const FILES: &[PackageFile] = &[
    PackageFile {
        path: "/etc/protocols",
        package: "netbase",
        need: Need::Deploy,
        why: "nft reads protocol names (vrrp) of the network policy from it",
    },
    PackageFile {
        path: "/usr/bin/python3",
        package: "python3",
        need: Need::Test,
        why: "haimg-init's supervisor tests run it by this path",
    },
    PackageFile {
        path: "/usr/lib/x86_64-linux-gnu/libc.a",
        package: "libc6-dev",
        need: Need::Build,
        why: "haimg-init is linked statically",
    },
    PackageFile {
        path: "/etc/ssl/certs/ca-certificates.crt",
        package: "ca-certificates",
        need: Need::Build,
        why: "TLS to the npm registry and the Debian security mirror",
    },
    PackageFile {
        path: "/usr/share/keyrings/debian-archive-keyring.gpg",
        package: "debian-archive-keyring",
        need: Need::Build,
        why: "the recipes' signed-by key ring",
    },
];

/// Packages checked by dpkg's status, where a path would not tell (a
/// static busybox and a dynamic one both install /bin/busybox).
pub const PACKAGES: &[(&str, Need, &str)] = &[
    (
        "liblxc-common",
        Need::Deploy,
        "the shared LXC configs the containers include",
    ),
    (
        "busybox-static",
        Need::Test,
        "the local backend tests' container root",
    ),
];

/// The rustup components `make lint` runs.
pub const RUST_COMPONENTS: &[(&str, &str)] = &[("fmt", "rustfmt"), ("clippy", "clippy")];

/// The Debian packages `make setup` installs: every package above, except
/// rustup and make, which come first.
pub fn setup_packages() -> Vec<&'static str> {
    let mut v: Vec<&str> = TOOLS
        .iter()
        .map(|t| t.package)
        .chain(FILES.iter().map(|f| f.package))
        .chain(PACKAGES.iter().map(|p| p.0))
        .filter(|p| *p != RUSTUP && *p != PREREQUISITE)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_includes_build_and_deploy() {
        assert_eq!(Need::expand(&[Need::Test]), Need::ALL);
        assert_eq!(
            Need::expand(&[Need::Deploy, Need::Build, Need::Deploy]),
            [Need::Build, Need::Deploy]
        );
    }

    /// `make setup` installs exactly the packages doctor checks.
    #[test]
    fn the_makefile_installs_what_doctor_checks() {
        let makefile = include_str!("../../Makefile");
        let mut joined = String::new();
        let mut inside = false;
        for l in makefile.lines() {
            if l.starts_with("APT_PACKAGES :=") {
                inside = true;
            }
            if inside {
                joined.push_str(l.trim_end_matches('\\'));
                joined.push(' ');
                if !l.ends_with('\\') {
                    break;
                }
            }
        }
        let mut listed: Vec<&str> = joined
            .trim_start_matches("APT_PACKAGES :=")
            .split_whitespace()
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, setup_packages(), "APT_PACKAGES in the Makefile");
    }
}
