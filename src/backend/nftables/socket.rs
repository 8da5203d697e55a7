//! A NETLINK_NETFILTER socket: send one request, read its replies until
//! the kernel says done (a dump) or acknowledges (a change). The only code
//! of the nftables backend that touches the kernel; everything it reads
//! goes through the checked parsers of `netlink.rs`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::netlink::{self, Message, NLMSG_DONE, NLMSG_ERROR};

const NETLINK_NETFILTER: libc::c_int = 12;
/// Large enough for the kernel's biggest dump datagram (it fills up to a page or two).
const RECV_BUF: usize = 64 * 1024;
/// A kernel that never answers must not hang the harvest for ever. (poll's
/// timeout is a plain int: no `timeval`, whose width differs between
/// 32-bit C libraries.)
const REPLY_TIMEOUT_MS: libc::c_int = 5000;

/// The send buffer the kernel gives a socket (net.core.wmem_default) is
/// about 208 KiB on 64-bit machines and less on 32-bit ones; a batch must
/// fit in it whole. The table's creation is about 160 KiB, and thousands
/// of `--exclude` ranges add 40–72 bytes each: larger batches get a buffer
/// to fit.
const SEND_BUF_DEFAULT: usize = 128 * 1024;

pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    /// What the send buffer was set to hold, if it was ([`Self::make_room`]).
    send_buf: usize,
    /// Replies are read into this, kept from one exchange to the next (a
    /// harvest makes a hundred and more).
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain FFI; the result is checked before it becomes an OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Socket { fd, seq: 1, send_buf: SEND_BUF_DEFAULT, buf: Vec::new() })
    }

    /// The next sequence number, for a request's header.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` (built with that sequence number) and hands every
    /// reply message to `each` until the dump ends or the request is
    /// acknowledged. A negative errno from the kernel is an error.
    pub fn exchange(&mut self, request: &[u8], seq: u32, mut each: impl FnMut(&Message)) -> io::Result<()> {
        self.send(request)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(RECV_BUF, 0);
        let answer = self.replies(&mut buf, seq, &mut each);
        self.buf = buf;
        answer
    }

    /// Reads replies to `seq` into `buf` until the last; see [`Self::exchange`].
    fn replies(&self, buf: &mut [u8], seq: u32, each: &mut impl FnMut(&Message)) -> io::Result<()> {
        loop {
            let n = self.recv(buf)?;
            for message in netlink::messages(&buf[..n]) {
                if message.seq != seq {
                    continue;
                }
                match message.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match message.error_code() {
                            Some(0) => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code)),
                            None => Err(io::Error::new(io::ErrorKind::InvalidData, "a truncated netlink error")),
                        };
                    }
                    _ => each(&message),
                }
            }
        }
    }

    /// Lets the socket send `len` bytes in one datagram: the kernel refuses
    /// (EMSGSIZE) one larger than its send buffer. SO_SNDBUFFORCE passes
    /// net.core.wmem_max, and needs CAP_NET_ADMIN, as the table does; the
    /// kernel doubles the value asked for, for its own overhead.
    fn make_room(&mut self, len: usize) {
        if len <= self.send_buf {
            return;
        }
        let size = libc::c_int::try_from(len.saturating_add(4096)).unwrap_or(libc::c_int::MAX);
        for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
            // SAFETY: a live descriptor and a c_int option value of the size given.
            let set = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if set == 0 {
                self.send_buf = len;
                return;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.make_room(bytes.len());
        // SAFETY: the pointer and length describe a live slice; the address is zeroed (the kernel).
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut ready = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd.
        match unsafe { libc::poll(&raw mut ready, 1, REPLY_TIMEOUT_MS) } {
            0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer within 5 s")),
            n if n < 0 => return Err(io::Error::last_os_error()),
            _ => {}
        }
        loop {
            // SAFETY: the pointer and length describe a live, writable buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
