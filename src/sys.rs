//! The few libc calls std does not offer: the effective user id, sending a
//! signal to a child's process group, tying a child's life to ours, this
//! host's addresses, and two sysconf values for /proc.
//! Declared here rather than pulling in the libc crate for a handful of functions.

unsafe extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn sysconf(name: i32) -> i64;
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    fn getifaddrs(ifap: *mut *mut IfAddrs) -> i32;
    fn freeifaddrs(ifa: *mut IfAddrs);
}

/// `struct ifaddrs` (same layout in glibc and musl).
#[repr(C)]
struct IfAddrs {
    next: *mut IfAddrs,
    name: *const u8,
    flags: u32,
    addr: *const SockAddr,
    netmask: *const SockAddr,
    broadcast_or_peer: *const SockAddr,
    data: *const u8,
}

/// The start of `struct sockaddr_in` / `sockaddr_in6`.
#[repr(C)]
struct SockAddr {
    family: u16,
    port: u16,
    /// IPv4: the address; IPv6: the flow info.
    v4_or_flow: [u8; 4],
    /// IPv6 only: the address.
    v6: [u8; 16],
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const PR_SET_PDEATHSIG: i32 = 1;

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

/// Makes the kernel kill the calling process when its parent dies. Called
/// in a freshly forked child (it is async-signal-safe), so a monitor killed
/// with SIGKILL leaves no bpftrace behind.
pub fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG only reads its integer arguments.
    if unsafe { prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every address of every interface, IPv4 and IPv6.
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut list: *mut IfAddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut addrs = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned; its
        // addr is null or points at a sockaddr of the family it names, and
        // sockaddr_in6 is at least as long as `SockAddr` reads for IPv6.
        unsafe {
            let addr = (*node).addr;
            if !addr.is_null() {
                match (*addr).family {
                    AF_INET => addrs.push(std::net::IpAddr::from((*addr).v4_or_flow)),
                    AF_INET6 => addrs.push(std::net::IpAddr::from((*addr).v6)),
                    _ => {}
                }
            }
            node = (*node).next;
        }
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { freeifaddrs(list) };
    addrs
}
