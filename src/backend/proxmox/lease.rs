//! A run lease kept in Proxmox itself, so that two deploy hosts driving one
//! Proxmox cluster do not interleave their runs: a resource pool named for
//! the cluster (`haimg-<cluster>-run`) whose comment says who holds it.
//!
//! Why a pool: `POST /pools` is atomic cluster-wide (pve-manager
//! `PVE/API2/Pool.pm create_pool` runs under the `user.cfg` lock of pmxcfs
//! and dies with "pool '<id>' already exists"), needs only `Pool.Allocate`
//! on `/pool/<id>`, holds a free-text comment (stored URI-encoded), is seen
//! by every node and every deploy host, and holds no guest (haimg never adds
//! one). Nothing else in the API is both atomic and free for such use.
//!
//! The comment is opaque here: [`MARK`] followed by what the caller gives
//! (the CLI writes its holder as JSON, with an expiry it renews). Taking a
//! lease whose create answer was lost is settled by reading the pool back:
//! ours if its comment is the one we sent. A release deletes the pool only
//! while its comment is still ours, so a run whose lease was broken by
//! `--force-unlock` never removes its successor's.

use serde_json::Value;

use super::client::{ApiError, Client, Method, Params};
use crate::backend::{BackendError, Result};

/// Every lease comment starts with this; a pool of that name without it is
/// somebody else's and is never touched.
pub const MARK: &str = "haimg run lease: ";

/// The pool that holds `cluster`'s lease. Cluster names are letters, digits
/// and `-` (the spec checks), which `pve-poolid` accepts.
pub fn pool_id(cluster: &str) -> String {
    format!("haimg-{cluster}-run")
}

/// What taking the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// Ours now.
    Taken,
    /// Held: the holder's text after [`MARK`].
    Held(String),
}

/// The lease calls, on a client of their own (a renewal runs beside the run).
#[derive(Clone)]
pub struct LeaseApi {
    client: Client,
    pool: String,
}

impl std::fmt::Debug for LeaseApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseApi")
            .field("pool", &self.pool)
            .finish()
    }
}

impl LeaseApi {
    pub fn new(client: Client, cluster: &str) -> LeaseApi {
        LeaseApi {
            client,
            pool: pool_id(cluster),
        }
    }

    pub fn pool(&self) -> &str {
        &self.pool
    }

    fn err(&self, call: &str, e: impl ToString) -> BackendError {
        BackendError::Call {
            call: format!("{call} /pools (poolid {})", self.pool),
            node: String::new(),
            vmid: None,
            message: e.to_string(),
        }
    }

    /// Create the pool with `holder` in its comment; [`Take::Held`] when it
    /// exists. A pool of that name that is not a haimg lease is an error.
    pub fn take(&self, holder: &str) -> Result<Take> {
        let comment = format!("{MARK}{holder}");
        let params = Params::new()
            .add("poolid", self.pool.as_str())
            .add("comment", comment.as_str());
        // A lease released between our create and our read is tried again, a
        // few times: each round means another run finished meanwhile.
        for _ in 0..3 {
            match self.client.call(Method::Post, "/pools", &params) {
                Ok(_) => return Ok(Take::Taken),
                Err(e) if lost(&e) || exists(&e) => {}
                Err(e) => return Err(self.err("POST", e)),
            }
            // A lost answer, or "already exists": the pool says which.
            match self.read()? {
                Some(c) if c == holder => return Ok(Take::Taken),
                Some(c) => return Ok(Take::Held(c)),
                // Not there: the create did not run, or was undone; again.
                None => continue,
            }
        }
        Err(self.err(
            "POST",
            "the lease was taken and released three times while this run tried to take it",
        ))
    }

    /// The holder's text, or `None` when nobody holds the lease.
    pub fn read(&self) -> Result<Option<String>> {
        let params = Params::new().add("poolid", self.pool.as_str());
        let v = match self.client.call(Method::Get, "/pools", &params) {
            Ok(v) => v,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(self.err("GET", e)),
        };
        let comment = comment_of(&v, &self.pool).unwrap_or_default();
        match comment.strip_prefix(MARK) {
            Some(h) => Ok(Some(h.to_string())),
            None => Err(self.err(
                "GET",
                format!(
                    "a pool {} exists that is not a haimg run lease (comment {comment:?}); rename or remove it",
                    self.pool
                ),
            )),
        }
    }

    /// Write a new holder text (a renewal) while the lease is ours (`was`).
    pub fn renew(&self, was: &str, holder: &str) -> Result<()> {
        match self.read()? {
            Some(c) if c == was => {}
            other => {
                return Err(self.err(
                    "PUT",
                    format!(
                        "the lease is no longer ours (now {}): another run broke it with --force-unlock",
                        other.as_deref().unwrap_or("free")
                    ),
                ))
            }
        }
        let comment = format!("{MARK}{holder}");
        let params = Params::new()
            .add("poolid", self.pool.as_str())
            .add("comment", comment.as_str());
        self.client
            .call(Method::Put, "/pools", &params)
            .map(|_| ())
            .map_err(|e| self.err("PUT", e))
    }

    /// Delete the pool while its holder text is `holder` (ours); a lease
    /// someone else holds now is left alone.
    pub fn release(&self, holder: &str) -> Result<bool> {
        if self.read()?.as_deref() != Some(holder) {
            return Ok(false);
        }
        self.delete().map(|()| true)
    }

    /// Delete the pool whoever holds it (`--force-unlock`), if it is a lease.
    pub fn force_release(&self) -> Result<Option<String>> {
        let held = self.read()?;
        if held.is_some() {
            self.delete()?;
        }
        Ok(held)
    }

    fn delete(&self) -> Result<()> {
        let params = Params::new().add("poolid", self.pool.as_str());
        match self.client.call(Method::Delete, "/pools", &params) {
            Ok(_) => Ok(()),
            Err(e) if missing(&e) => Ok(()),
            Err(e) if lost(&e) && self.read()?.is_none() => Ok(()),
            Err(e) => Err(self.err("DELETE", e)),
        }
    }
}

/// The request may have run, but its answer did not come back.
fn lost(e: &ApiError) -> bool {
    matches!(e, ApiError::Transport { sent: true, .. }) || matches!(e.status(), Some(596..=599))
}

fn exists(e: &ApiError) -> bool {
    e.status() == Some(500) && e.message().contains("already exists")
}

fn missing(e: &ApiError) -> bool {
    e.status() == Some(500) && e.message().contains("does not exist")
}

/// `GET /pools?poolid=` answers a list of one pool.
fn comment_of(v: &Value, pool: &str) -> Option<String> {
    let one = match v {
        Value::Array(a) => a.iter().find(|p| p["poolid"] == pool)?,
        other => other,
    };
    one.get("comment")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_are_what_pve_poolid_accepts() {
        // pve-access-control verify_poolname; create_pool: must start with a letter.
        let ok = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        };
        for c in ["haimg", "prod-eu-1", "x"] {
            assert!(ok(&pool_id(c)), "{}", pool_id(c));
        }
    }

    #[test]
    fn the_comment_is_read_from_the_list_answer() {
        let v = serde_json::json!([{"poolid": "haimg-x-run", "comment": "haimg run lease: {}", "members": []}]);
        assert_eq!(
            comment_of(&v, "haimg-x-run").as_deref(),
            Some("haimg run lease: {}")
        );
        assert_eq!(comment_of(&v, "other"), None);
    }
}
