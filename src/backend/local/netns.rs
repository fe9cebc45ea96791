//! Running Rust code inside a network namespace (the cluster's client side).
//!
//! `setns(2)` with `CLONE_NEWNET` changes only the calling thread, so
//! [`run_in`] does it on a fresh scoped thread: every socket the closure opens
//! lives in the namespace, the rest of the program is untouched, and the
//! thread ends with the closure. This is how `haimg test` and the integration
//! tests send traffic to the VIP and the members without any host route.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Run `f` on a thread inside the network namespace at `netns`
/// (e.g. `/run/netns/haimg-<cluster>-<id>`) and return its result.
pub fn run_in<T, F>(netns: &Path, f: F) -> std::io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a descriptor we hold open; it affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop(file);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
