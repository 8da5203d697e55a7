//! The few libc calls std does not offer: the effective user id and sending a
//! signal to a child's process group. Declared here rather than pulling in
//! the libc crate for two functions.

unsafe extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

/// Sends `sig` to the process group led by `pid` (children are started as
/// group leaders, so this reaches bpftrace and anything it runs).
pub fn signal_group(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill only reads its integer arguments; a stale pid yields ESRCH.
    unsafe {
        kill(-pid, sig);
    }
}
