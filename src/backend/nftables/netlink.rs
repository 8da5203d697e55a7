//! Netlink messages by hand, as nf_tables speaks them (NETLINK_NETFILTER):
//! a 16-byte header (length, type, flags, sequence, port), the 4-byte
//! `nfgenmsg` (family, version, resource id), then attributes: 2-byte
//! length, 2-byte type, the payload, padded to 4 bytes; a nested attribute
//! holds attributes. Building appends to a `Vec`; reading borrows the
//! received bytes and never trusts a length (every slice is checked), so
//! the kernel's replies, or anything else, cannot make it read out of
//! bounds or loop. Pure: the socket is in `socket.rs`.

/// `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
/// `struct nfgenmsg`.
pub const NFGEN_LEN: usize = 4;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;

/// Attribute type bits that are flags, not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
pub const NLA_F_NESTED: u16 = 0x8000;

/// Rounds up to the 4-byte alignment of netlink.
pub fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// One message under construction.
pub struct Builder {
    buf: Vec<u8>,
    start: usize,
}

impl Builder {
    /// Starts a message of `kind` with an `nfgenmsg` for `family`.
    pub fn new(kind: u16, flags: u16, seq: u32, family: u8) -> Builder {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0; 4]); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it in
        buf.extend_from_slice(&[family, 0, 0, 0]); // NFNETLINK_V0, resource id 0
        Builder { buf, start: 0 }
    }

    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Builder {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.start + align(self.buf.len() - self.start), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, kind: u16, text: &str) -> &mut Builder {
        let mut payload = Vec::with_capacity(text.len() + 1);
        payload.extend_from_slice(text.as_bytes());
        payload.push(0);
        self.attr(kind, &payload)
    }

    /// A 32-bit attribute in network byte order (what nf_tables expects).
    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Builder {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Builder::end_nest`].
    pub fn begin_nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn end_nest(&mut self, at: usize) -> &mut Builder {
        // Callers keep a nest under 64 KiB (see table::RANGES_PER_MESSAGE).
        debug_assert!(self.buf.len() - at <= usize::from(u16::MAX), "a netlink attribute of 64 KiB or more");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The message, its length set.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// What follows the header (for nf_tables: the nfgenmsg, then attributes).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The attributes after the `nfgenmsg`; empty if it is missing.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { rest: self.payload.get(NFGEN_LEN..).unwrap_or_default() }
    }

    /// For an `NLMSG_ERROR`: the (negative) errno, 0 for an acknowledgement.
    pub fn error_code(&self) -> Option<i32> {
        let code = self.payload.get(..4)?;
        Some(i32::from_ne_bytes(code.try_into().ok()?))
    }
}

/// The messages in one datagram; stops at the first that does not fit.
pub struct Messages<'a> {
    rest: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let header = self.rest.get(..HEADER_LEN)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        let body = self.rest.get(HEADER_LEN..len.max(HEADER_LEN)).filter(|_| len >= HEADER_LEN);
        let Some(payload) = body else {
            self.rest = &[];
            return None;
        };
        let message = Message {
            kind: u16::from_ne_bytes(header[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(header[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(header[8..12].try_into().ok()?),
            payload,
        };
        self.rest = self.rest.get(align(len)..).unwrap_or_default();
        Some(message)
    }
}

/// The attributes in a payload: `(type, payload)`, the flag bits masked off.
#[derive(Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

pub fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes { rest: buf }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let header = self.rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        let Some(payload) = self.rest.get(4..len).filter(|_| len >= 4) else {
            self.rest = &[];
            return None;
        };
        self.rest = self.rest.get(align(len)..).unwrap_or_default();
        Some((kind, payload))
    }
}

impl<'a> Attributes<'a> {
    /// The payload of the first attribute of `kind`.
    pub fn find(self, kind: u16) -> Option<&'a [u8]> {
        self.into_iter().find_map(|(k, payload)| (k == kind).then_some(payload))
    }
}

/// A big-endian u64 attribute payload (nf_tables counters).
pub fn be_u64(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_message_reads_back_with_its_nested_attributes() {
        let mut b = Builder::new(0x0a0d, NLM_F_REQUEST | NLM_F_DUMP, 7, 1);
        b.attr_str(1, "itm").attr_str(2, "tx4");
        let nest = b.begin_nest(3);
        b.attr_u32(1, 0xC000_0201);
        b.end_nest(nest);
        let bytes = b.finish();
        assert_eq!(bytes.len() % 4, 0);
        let all: Vec<Message> = messages(&bytes).collect();
        assert_eq!(all.len(), 1);
        let m = all[0];
        assert_eq!((m.kind, m.flags, m.seq), (0x0a0d, NLM_F_REQUEST | NLM_F_DUMP, 7));
        assert_eq!(m.payload[0], 1, "family in the nfgenmsg");
        let attrs: Vec<(u16, &[u8])> = m.attributes().collect();
        assert_eq!(attrs[0], (1, &b"itm\0"[..]));
        assert_eq!(attrs[1], (2, &b"tx4\0"[..]));
        assert_eq!(attrs[2].0, 3, "the nested flag is masked off");
        assert_eq!(attributes(attrs[2].1).find(1), Some(&[0xC0, 0, 2, 1][..]));
    }

    #[test]
    fn lengths_that_lie_end_the_walk_without_reading_past_the_end() {
        // A message claiming 1000 bytes in a 20-byte buffer; an attribute claiming 2 bytes.
        let mut bytes = Builder::new(1, 0, 0, 0).finish();
        bytes[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(messages(&bytes).count(), 0);
        assert_eq!(attributes(&[2, 0, 1, 0, 9, 9]).count(), 0);
        assert_eq!(attributes(&[8, 0, 1, 0, 9, 9]).count(), 0, "8 claimed, 6 there");
        assert_eq!(attributes(&[5, 0, 1, 0, 9]).collect::<Vec<_>>(), [(1, &[9u8][..])]);
        assert_eq!(be_u64(&[0, 0, 0, 0, 0, 0, 1, 2]), Some(258));
        assert_eq!(be_u64(&[1, 2]), None);
    }
}
