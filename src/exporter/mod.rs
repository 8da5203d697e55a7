//! The Prometheus exporter: a small hand-written HTTP/1.1 server on its own
//! threads. One thread accepts; each connection gets a thread with a small
//! stack, read and write timeouts, and a deadline for its request head, so a
//! slow or hostile client only ever holds up itself. At most
//! [`MAX_CONNECTIONS`] are open; past that the connection idle the longest
//! is closed to make room, so a flood of idle connections cannot lock out a
//! scraper. Serves `/metrics` (GET, HEAD) and a small index page.

mod exposition;
#[doc(hidden)]
pub mod http;
pub mod metrics;
mod procfs;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::location::Locator;
use crate::store::Store;
use http::{Method, Reject, Request};

pub const MAX_CONNECTIONS: usize = 256;
/// Time a kept-alive connection may wait for its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time from a request's first byte to the end of its head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const THREAD_STACK: usize = 128 * 1024;

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const INDEX: &str = "<html><head><title>ip_traffic_monitor_cli</title></head><body>\
<h1>ip_traffic_monitor_cli</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// What the connection threads need.
pub struct Shared {
    pub store: Arc<Store>,
    pub backend: &'static str,
    pub locator: Arc<Locator>,
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

/// Open connections, so that the one idle the longest can be closed when
/// the cap is reached.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
}

struct Slot {
    stream: TcpStream,
    /// `Some`: waiting for (the rest of) a request head since then; `None`: answering.
    idle_since: Option<Instant>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection, closing the longest-idle one if full.
    /// `None` when every open connection is busy answering.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let mut conns = self.lock();
        if conns.len() >= MAX_CONNECTIONS {
            let oldest = conns
                .iter()
                .filter_map(|(id, slot)| slot.idle_since.map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(slot) = conns.remove(&oldest) {
                let _ = slot.stream.shutdown(Shutdown::Both);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let clone = stream.try_clone().ok()?;
        conns.insert(id, Slot { stream: clone, idle_since: Some(Instant::now()) });
        Some(id)
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(slot) = self.lock().get_mut(&id) {
            slot.idle_since = if idle { Some(slot.idle_since.unwrap_or_else(Instant::now)) } else { None };
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, registry: &Arc<Registry>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => admit(stream, shared, registry),
            // Out of descriptors or a connection reset while queued: keep serving.
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn admit(stream: TcpStream, shared: &Arc<Shared>, registry: &Arc<Registry>) {
    let Some(id) = registry.admit(&stream) else {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let body = "too many busy connections\n";
        let head = http::response_head("503 Service Unavailable", "text/plain; charset=utf-8", body.len(), false, "");
        let _ = (&stream).write_all(format!("{head}{body}").as_bytes());
        return;
    };
    let (shared, registry2) = (Arc::clone(shared), Arc::clone(registry));
    let spawned = thread::Builder::new()
        .name("exporter-conn".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            serve_connection(stream, &shared, &registry2, id);
            registry2.remove(id);
        });
    if spawned.is_err() {
        registry.remove(id);
    }
}

enum HeadError {
    Closed,
    TooLarge,
}

fn serve_connection(mut stream: TcpStream, shared: &Shared, registry: &Registry, id: u64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    loop {
        registry.set_idle(id, true);
        let end = match read_head(&mut stream, &mut buf) {
            Ok(end) => end,
            Err(HeadError::Closed) => return,
            Err(HeadError::TooLarge) => {
                let _ = respond_error(&mut stream, Reject::HeadTooLarge);
                return;
            }
        };
        registry.set_idle(id, false);
        let keep_alive = match http::parse_head(&buf[..end]) {
            Ok(request) => match respond(&mut stream, shared, &request) {
                Ok(()) => request.keep_alive,
                Err(_) => false,
            },
            Err(reject) => {
                let _ = respond_error(&mut stream, reject);
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
        if let Some(end) = http::head_end(buf) {
            return if end > http::MAX_HEAD { Err(HeadError::TooLarge) } else { Ok(end) };
        }
        if buf.len() > http::MAX_HEAD {
            return Err(HeadError::TooLarge);
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

fn respond(stream: &mut TcpStream, shared: &Shared, request: &Request) -> std::io::Result<()> {
    let (status, content_type, body) = match request.path {
        b"/metrics" => ("200 OK", METRICS_TYPE, metrics::render(&shared.store, shared.backend, &shared.locator)),
        b"/" => ("200 OK", "text/html; charset=utf-8", INDEX.to_string()),
        _ => ("404 Not Found", "text/plain; charset=utf-8", "not found: try /metrics\n".to_string()),
    };
    let head = http::response_head(status, content_type, body.len(), request.keep_alive, "");
    stream.write_all(head.as_bytes())?;
    if request.method == Method::Get {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

fn respond_error(stream: &mut TcpStream, reject: Reject) -> std::io::Result<()> {
    let body = format!("{}\n", reject.status());
    let allow = if reject == Reject::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let head = http::response_head(reject.status(), "text/plain; charset=utf-8", body.len(), false, allow);
    stream.write_all(format!("{head}{body}").as_bytes())
}
