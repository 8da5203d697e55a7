//! The HTTP/1.1 subset the exporter speaks: finding the end of a request
//! head, reading its request line and headers into a [`Request`] or a
//! [`Reject`] with the status to answer, and writing response heads.
//! Nothing here allocates per request except the response head.

use memchr::memmem;

/// Longest request head accepted (request line + headers).
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path without the query string.
    pub path: &'a [u8],
    /// What follows `?`, if anything (empty otherwise).
    pub query: &'a [u8],
    pub keep_alive: bool,
}

/// A request answered with an error status, after which the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    BadRequest,
    MethodNotAllowed,
    HeadTooLarge,
    VersionNotSupported,
}

impl Reject {
    pub fn status(self) -> &'static str {
        match self {
            Reject::BadRequest => "400 Bad Request",
            Reject::MethodNotAllowed => "405 Method Not Allowed",
            Reject::HeadTooLarge => "431 Request Header Fields Too Large",
            Reject::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }
}

/// How far a buffer holds a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadScan {
    /// Not yet: read more.
    Incomplete,
    /// A head of this length, its terminating blank line included.
    Complete(usize),
    /// A line ends in a bare LF: answered 400 at once (RFC 9112 allows
    /// rejecting it; waiting for a CRLF blank line that never comes would
    /// hold the client until the head timeout).
    BareLf,
}

pub fn scan_head(buf: &[u8]) -> HeadScan {
    let end = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let searched = &buf[..end.unwrap_or(buf.len())];
    let bare_lf = memchr::memchr_iter(b'\n', searched).any(|i| i == 0 || searched[i - 1] != b'\r');
    match end {
        _ if bare_lf => HeadScan::BareLf,
        Some(end) => HeadScan::Complete(end),
        None => HeadScan::Incomplete,
    }
}

pub fn parse_head(head: &[u8]) -> Result<Request<'_>, Reject> {
    if head.len() > MAX_HEAD {
        return Err(Reject::HeadTooLarge);
    }
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or(Reject::BadRequest)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::BadRequest);
    };
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        v if is_http_version(v) => return Err(Reject::VersionNotSupported),
        _ => return Err(Reject::BadRequest),
    };
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return Err(Reject::BadRequest);
    }
    let (path, query) = request_path(target).ok_or(Reject::BadRequest)?;
    let (mut asks_keep_alive, mut asks_close) = (false, false);
    let mut has_host = false;
    let mut has_body = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let colon = memchr::memchr(b':', line).ok_or(Reject::BadRequest)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(Reject::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim) {
                asks_close |= option.eq_ignore_ascii_case(b"close");
                asks_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
        {
            has_body = true;
        }
    }
    if !http10 && !has_host {
        return Err(Reject::BadRequest); // RFC 9112 3.2: HTTP/1.1 requires Host
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Err(Reject::MethodNotAllowed),
    };
    // `close` wins over `keep-alive` wherever it is. A body is never read:
    // answer, then close rather than misread it as the next request.
    let keep_alive = (!http10 || asks_keep_alive) && !asks_close && !has_body;
    Ok(Request { method, path, query, keep_alive })
}

/// Origin form `/path?query`, or absolute form `http://host/path`: the
/// path and the query.
fn request_path(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let target = match target.strip_prefix(b"http://").or_else(|| target.strip_prefix(b"https://")) {
        Some(rest) => &rest[memchr::memchr(b'/', rest)?..],
        None => target,
    };
    if !target.starts_with(b"/") || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return None;
    }
    Some(match memchr::memchr(b'?', target) {
        Some(mark) => (&target[..mark], &target[mark + 1..]),
        None => (target, &[]),
    })
}

fn is_http_version(v: &[u8]) -> bool {
    v.strip_prefix(b"HTTP/").is_some_and(|n| !n.is_empty() && n.iter().all(|b| b.is_ascii_digit() || *b == b'.'))
}

/// RFC 9110 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &v[start..end]
}

/// A response head; `extra` holds further header lines, each ending in CRLF.
pub fn response_head(status: &str, content_type: &str, length: usize, keep_alive: bool, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Connection: {}\r\n{extra}\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(head: &str) -> Result<Request<'_>, Reject> {
        parse_head(head.as_bytes())
    }

    #[test]
    fn prometheus_style_requests_parse() {
        let r = get("GET /metrics HTTP/1.1\r\nHost: x:9464\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: text/plain\r\n\r\n").unwrap();
        assert_eq!((r.method, r.path, r.keep_alive), (Method::Get, &b"/metrics"[..], true));
        let r = get("HEAD /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!((r.method, r.path, r.keep_alive), (Method::Head, &b"/metrics"[..], false));
        let r = get("GET http://x:9464/metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.path, r.keep_alive), (&b"/metrics"[..], false));
        let r = get("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(r.keep_alive);
        let r = get("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert!(!r.keep_alive, "a request with a body closes the connection");
    }

    #[test]
    fn bad_requests_get_the_right_status() {
        for (head, reject) in [
            ("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Reject::MethodNotAllowed),
            ("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", Reject::MethodNotAllowed),
            ("GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", Reject::VersionNotSupported),
            ("GET /metrics HTTP/0.9\r\n\r\n", Reject::VersionNotSupported),
            ("GET /metrics\r\n\r\n", Reject::BadRequest),
            ("GET /metrics HTTP/1.1 extra\r\n\r\n", Reject::BadRequest),
            ("GET  /metrics HTTP/1.1\r\n\r\n", Reject::BadRequest),
            ("GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", Reject::BadRequest),
            ("GET /metrics HTTP/1.1\r\n\r\n", Reject::BadRequest),
            ("GET /metrics HTTP/1.1\r\nHost x\r\n\r\n", Reject::BadRequest),
            ("GET /metrics HTTP/1.1\r\nHo st: x\r\n\r\n", Reject::BadRequest),
            ("G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Reject::BadRequest),
            ("GET /met\u{1}rics HTTP/1.1\r\nHost: x\r\n\r\n", Reject::BadRequest),
            ("GET /metrics FTP/1.1\r\n\r\n", Reject::BadRequest),
            ("\r\n\r\n", Reject::BadRequest),
        ] {
            assert_eq!(get(head), Err(reject), "{head:?}");
        }
        let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(get(&huge), Err(Reject::HeadTooLarge));
    }

    #[test]
    fn a_head_ends_at_the_crlf_blank_line_and_a_bare_lf_is_refused_at_once() {
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), HeadScan::Incomplete);
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\n\r\nGET"), HeadScan::Complete(18));
        // Pipelined bytes after the head are the next request's business.
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\n\r\nGET /\n"), HeadScan::Complete(18));
        for bare in [&b"GET / HTTP/1.1\nHost: x\n\n"[..], b"GET / HTTP/1.1\n", b"\n", b"GET / HTTP/1.1\r\nHost: x\n"] {
            assert_eq!(scan_head(bare), HeadScan::BareLf, "{:?}", String::from_utf8_lossy(bare));
        }
    }

    #[test]
    fn connection_close_wins_over_keep_alive() {
        for head in [
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        ] {
            assert!(!get(head).unwrap().keep_alive, "{head:?}");
        }
    }
}
