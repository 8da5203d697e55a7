//! The Prometheus exporter: a small hand-written HTTP/1.1 server on its own
//! threads. One thread accepts; each connection gets a thread with a small
//! stack, a deadline for its request head and one for each whole response
//! (not each write), so a slow or hostile client only ever holds up itself.
//! [`connections`] decides who gives way when the server or one client
//! address is full; [`body`] renders /metrics once per change of the store
//! and shares it between connections. Serves `/metrics` (GET, HEAD) and
//! the live page ([`live`]: `/`, its script and style, `/api/live`).

mod body;
pub mod connections;
mod exposition;
#[doc(hidden)]
pub mod http;
pub mod live;
pub mod metrics;
mod procfs;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::location::{Ledger, Locator};
use crate::store::Store;
use body::{Bodies, Body};
use connections::Registry;
use http::{HeadScan, Method, Reject, Request};

/// Time a kept-alive connection may wait for its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time from a request's first byte to the end of its head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one whole response may take to send, however the client reads.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(20);
/// A response is written in pieces this large, each one progress.
const WRITE_CHUNK: usize = 64 * 1024;
/// Requests served on one connection before it is closed (pipelined or not).
const MAX_REQUESTS: u32 = 100;
const THREAD_STACK: usize = 128 * 1024;

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the connection threads need.
pub struct Shared {
    pub store: Arc<Store>,
    pub backend: &'static str,
    pub locator: Arc<Locator>,
    pub ledger: Arc<Ledger>,
    bodies: Bodies,
    /// The live page's documents, one per size of its top list.
    live: [Bodies; live::TOP_SIZES.len()],
    /// The backend's report interval, and the host's name, for the live page.
    interval: Duration,
    host: String,
}

impl Shared {
    pub fn new(store: Arc<Store>, backend: &'static str, interval: Duration, locator: Arc<Locator>, ledger: Arc<Ledger>) -> Shared {
        let host = live::host_name();
        Shared { store, backend, locator, ledger, bodies: Bodies::default(), live: Default::default(), interval, host }
    }

    fn live_body(&self, query: &[u8]) -> Body {
        let top = live::top_size(query);
        let slot = live::TOP_SIZES.iter().position(|&size| size == top).unwrap_or(0);
        self.live[slot].get(self.store.generation(), || {
            let about = live::About { host: &self.host, backend: self.backend, interval: self.interval, up: self.store.health().get().up };
            live::render(&self.store, &self.locator, &about, top).into_bytes()
        })
    }

    fn metrics_body(&self) -> Body {
        self.bodies.get(self.store.generation(), || {
            metrics::render(&self.store, self.backend, &self.locator, &self.ledger).into_bytes()
        })
    }
}

/// Binds `addr` (so a port in use is a startup error) and serves it from
/// background threads for the rest of the process's life.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, Error> {
    let listener =
        TcpListener::bind(addr).map_err(|e| Error::fatal(format!("cannot serve /metrics on {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let registry = Arc::new(Registry::default());
    thread::Builder::new()
        .name("exporter".into())
        .spawn(move || accept_loop(&listener, &shared, &registry))
        .map_err(|e| Error::fatal(format!("cannot start the exporter thread: {e}")))?;
    Ok(bound)
}

/// A descriptor held in reserve: when the process runs out, it is freed to
/// accept (and close) the waiting connection, so the listener never stalls
/// on a full backlog.
fn reserve_descriptor() -> Option<File> {
    File::open("/dev/null").ok()
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, registry: &Arc<Registry>) {
    let mut reserve = reserve_descriptor();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => admit(stream, peer, shared, registry),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of descriptors: the stalest connection gives way (its
                // descriptor comes back when its thread closes it), and the
                // reserve lets the waiting client in now.
                registry.evict_stalest();
                drop(reserve.take());
                if let Ok((stream, peer)) = listener.accept() {
                    admit(stream, peer, shared, registry);
                }
                thread::sleep(Duration::from_millis(10));
            }
            // A connection reset while queued, or similar: keep serving.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        if reserve.is_none() {
            reserve = reserve_descriptor();
        }
    }
}

fn admit(mut stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>, registry: &Arc<Registry>) {
    let id = registry.admit(&stream, peer.ip());
    let (shared, registry2) = (Arc::clone(shared), Arc::clone(registry));
    let spawned = thread::Builder::new()
        .name("exporter-conn".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            serve_connection(&mut stream, &shared, &registry2, id);
            // Forgotten before it is closed (on drop): see connections::Slot.
            registry2.remove(id);
            drop(stream);
        });
    if spawned.is_err() {
        // The stream was closed with the closure, before this: harmless,
        // since only this (the accept) thread ever shuts a slot down.
        registry.remove(id);
    }
}

enum HeadError {
    Closed,
    Rejected(Reject),
}

fn serve_connection(stream: &mut TcpStream, shared: &Shared, registry: &Registry, id: u64) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    for served in 1..=MAX_REQUESTS {
        let end = match read_head(stream, &mut buf) {
            Ok(end) => end,
            Err(HeadError::Closed) => return,
            Err(HeadError::Rejected(reject)) => {
                let _ = respond_error(stream, reject);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        registry.touch(id);
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        let keep_alive = match http::parse_head(&buf[..end]) {
            Ok(request) => {
                let keep_alive = request.keep_alive && served < MAX_REQUESTS;
                respond(stream, shared, &request, keep_alive, &mut |_| registry.touch(id), deadline).is_ok() && keep_alive
            }
            Err(reject) => {
                let _ = respond_error(stream, reject);
                false
            }
        };
        if !keep_alive {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        buf.drain(..end);
    }
}

/// Reads until `buf` holds a whole request head; returns its length.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HeadError> {
    let mut started = (!buf.is_empty()).then(Instant::now);
    let mut chunk = [0u8; 4096];
    loop {
        match http::scan_head(buf) {
            HeadScan::Complete(end) if end > http::MAX_HEAD => return Err(HeadError::Rejected(Reject::HeadTooLarge)),
            HeadScan::Complete(end) => return Ok(end),
            HeadScan::BareLf => return Err(HeadError::Rejected(Reject::BadRequest)),
            HeadScan::Incomplete if buf.len() > http::MAX_HEAD => {
                return Err(HeadError::Rejected(Reject::HeadTooLarge));
            }
            HeadScan::Incomplete => {}
        }
        let timeout = match started {
            None => IDLE_TIMEOUT,
            Some(t) => HEAD_TIMEOUT.checked_sub(t.elapsed()).ok_or(HeadError::Closed)?,
        };
        if stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).is_err() {
            return Err(HeadError::Closed);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => {
                started.get_or_insert_with(Instant::now);
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Closed), // timed out, reset, shut down
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    shared: &Shared,
    request: &Request,
    keep_alive: bool,
    progress: &mut dyn FnMut(usize),
    deadline: Instant,
) -> std::io::Result<()> {
    let page = |text: &str| Arc::new(text.as_bytes().to_vec());
    let (status, content_type, body): (_, _, Body) = match request.path {
        b"/metrics" => ("200 OK", METRICS_TYPE, shared.metrics_body()),
        b"/" => ("200 OK", "text/html; charset=utf-8", page(live::INDEX_HTML)),
        b"/app.js" => ("200 OK", "text/javascript; charset=utf-8", page(live::APP_JS)),
        b"/app.css" => ("200 OK", "text/css; charset=utf-8", page(live::APP_CSS)),
        b"/api/live" => ("200 OK", "application/json", shared.live_body(request.query)),
        _ => ("404 Not Found", "text/plain; charset=utf-8", page("not found: try / or /metrics\n")),
    };
    let extra = format!("{}Cache-Control: no-store\r\n", live::SECURITY_HEADERS);
    let head = http::response_head(status, content_type, body.len(), keep_alive, &extra);
    write_before(stream, head.as_bytes(), deadline, progress)?;
    if request.method == Method::Get {
        write_before(stream, &body, deadline, progress)?;
    }
    Ok(())
}

/// Writes `bytes` in chunks, each allowed only the time left before
/// `deadline`: a client that reads slowly cannot stretch one response
/// past it. `progress` hears of every chunk written.
fn write_before(stream: &mut TcpStream, bytes: &[u8], deadline: Instant, progress: &mut dyn FnMut(usize)) -> std::io::Result<()> {
    for chunk in bytes.chunks(WRITE_CHUNK) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        stream.write_all(chunk)?;
        progress(chunk.len());
    }
    Ok(())
}

fn respond_error(stream: &mut TcpStream, reject: Reject) -> std::io::Result<()> {
    let body = format!("{}\n", reject.status());
    let allow = if reject == Reject::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let head = http::response_head(reject.status(), "text/plain; charset=utf-8", body.len(), false, allow);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    stream.write_all(format!("{head}{body}").as_bytes())
}
