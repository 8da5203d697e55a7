//! The few libc calls std does not offer: the effective user id, sending a
//! signal to a child's process group, tying a child's life to ours, this
//! host's addresses, a device's index, and two sysconf values for /proc. The declarations
//! come from the `libc` crate, which has them right for every target:
//! `long` and the variadic `prctl` differ between 64-bit hosts and the
//! 32-bit ARM and MIPS routers this runs on.

use std::net::IpAddr;

pub const SIGINT: i32 = libc::SIGINT;
pub const SIGKILL: i32 = libc::SIGKILL;

/// The index of network device `name` in this process's network namespace:
/// the kernel's answer (an ioctl on a socket of this namespace), where
/// /sys/class/net shows the namespace /sys was mounted in (`nsenter --net`
/// and container runtimes leave the host's), if there is such a device.
pub fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string; 0 means no such device.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

pub fn is_root() -> bool {
    effective_uid() == 0
}

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `sig` to the process group led by `pid` (children are started as
/// group leaders, so this reaches bpftrace and anything it runs).
pub fn signal_group(pid: u32, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill only reads its integer arguments; a stale pid yields ESRCH.
    unsafe {
        libc::kill(-pid, sig);
    }
}

/// Units of the CPU times in /proc (USER_HZ), normally 100.
pub fn clock_ticks_per_second() -> u64 {
    sysconf(libc::_SC_CLK_TCK).unwrap_or(100)
}

pub fn page_size() -> u64 {
    sysconf(libc::_SC_PAGESIZE).unwrap_or(4096)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads its integer argument.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

/// Makes the kernel kill the calling process when its parent dies. Called
/// in a freshly forked child (it is async-signal-safe), so a monitor killed
/// with SIGKILL leaves no bpftrace behind.
pub fn die_with_parent() -> std::io::Result<()> {
    // prctl is variadic: each argument is passed as an unsigned long, the
    // width the kernel reads on this target.
    let signal = SIGKILL as libc::c_ulong;
    // SAFETY: prctl with PR_SET_PDEATHSIG only reads its integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every address of every interface, IPv4 and IPv6.
pub fn local_addresses() -> Vec<IpAddr> {
    interface_addresses().into_iter().map(|a| a.addr).collect()
}

/// One address of an interface, with its netmask and, on a device that
/// broadcasts and was given one (`ip addr add … brd …`), its broadcast
/// address (never the address itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub netmask: Option<IpAddr>,
    pub broadcast: Option<IpAddr>,
}

/// Every address of every interface, as getifaddrs(3) gives them.
pub fn interface_addresses() -> Vec<InterfaceAddress> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut addrs = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned; its
        // sockaddr pointers are null or point at a sockaddr of the family
        // they name, and ifa_ifu is the broadcast address with IFF_BROADCAST.
        unsafe {
            if let Some(addr) = ip_of((*node).ifa_addr) {
                let broadcasts = (*node).ifa_flags & libc::IFF_BROADCAST as libc::c_uint != 0;
                // glibc gives the address itself where none was configured.
                let broadcast = if broadcasts { ip_of((*node).ifa_ifu).filter(|b| *b != addr) } else { None };
                addrs.push(InterfaceAddress { addr, netmask: ip_of((*node).ifa_netmask), broadcast });
            }
            node = (*node).ifa_next;
        }
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addrs
}

/// The address in `sockaddr`, if it is IPv4 or IPv6.
///
/// # Safety
/// `sockaddr` is null or points at a sockaddr of the family it names.
unsafe fn ip_of(sockaddr: *const libc::sockaddr) -> Option<IpAddr> {
    if sockaddr.is_null() {
        return None;
    }
    // SAFETY: as the caller promises, the family says which sockaddr it is.
    unsafe {
        match i32::from((*sockaddr).sa_family) {
            libc::AF_INET => Some(IpAddr::from((*sockaddr.cast::<libc::sockaddr_in>()).sin_addr.s_addr.to_ne_bytes())),
            libc::AF_INET6 => Some(IpAddr::from((*sockaddr.cast::<libc::sockaddr_in6>()).sin6_addr.s6_addr)),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_loopback_is_among_its_addresses() {
        let addrs = local_addresses();
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
        let loopback = interface_addresses().into_iter().find(|a| a.addr == IpAddr::from([127, 0, 0, 1]));
        assert_eq!(loopback.and_then(|a| a.netmask), Some(IpAddr::from([255, 0, 0, 0])), "its netmask");
    }

    #[test]
    fn sysconf_values_are_the_usual_ones() {
        assert_eq!(clock_ticks_per_second(), 100);
        assert!(page_size().is_power_of_two() && page_size() >= 4096);
    }
}
