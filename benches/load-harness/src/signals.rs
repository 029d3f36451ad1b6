//! Cleanup on SIGINT, SIGTERM and SIGHUP: stop the servers under test and remove the
//! network namespace, then exit (destructors do not run when a signal ends the process).

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::Mutex;

/// Server processes to stop.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Namespaces (and their root veth end) to remove.
static NAMESPACES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Starts the thread that cleans up and exits when a signal arrives.
pub fn install() -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("load-harness: signal {signal}, cleaning up");
                for pid in lock(&CHILDREN).iter() {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
                }
                for (ns, root_if) in lock(&NAMESPACES).iter() {
                    crate::netns::remove(ns, root_if);
                }
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stop this server process on a signal.
pub fn track_child(pid: u32) {
    lock(&CHILDREN).push(pid);
}

/// The process has been stopped and waited for.
pub fn untrack_child(pid: u32) {
    lock(&CHILDREN).retain(|p| *p != pid);
}

/// Remove this namespace on a signal.
pub fn track_netns(ns: &str, root_if: &str) {
    lock(&NAMESPACES).push((ns.to_string(), root_if.to_string()));
}

/// The namespace has been removed.
pub fn untrack_netns(ns: &str) {
    lock(&NAMESPACES).retain(|(n, _)| n != ns);
}
