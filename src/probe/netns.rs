//! Running Rust code inside a network namespace (a local cluster's client side).
//!
//! `setns(2)` with `CLONE_NEWNET` changes only the calling thread, so
//! [`run_in`] does it on a fresh scoped thread: every socket the closure opens
//! lives in the namespace, the rest of the program is untouched, and the
//! thread ends with the closure. [`enter`] is for threads that live in the
//! namespace for good (the golden load generator's workers).

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

/// Move the calling thread into the network namespace at `path`, for good.
pub fn enter(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}
