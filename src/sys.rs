//! The few libc calls std does not offer: the effective user id, sending a
//! signal to a child's process group, and two sysconf values for /proc.
//! Declared here rather than pulling in the libc crate for four functions.

unsafe extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn sysconf(name: i32) -> i64;
}

// sysconf names on Linux (glibc and musl agree).
const SC_CLK_TCK: i32 = 2;
const SC_PAGESIZE: i32 = 30;

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

/// Units of the CPU times in /proc (USER_HZ), normally 100.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads its integer argument.
    let v = unsafe { sysconf(SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

pub fn page_size() -> u64 {
    // SAFETY: as above.
    let v = unsafe { sysconf(SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}
