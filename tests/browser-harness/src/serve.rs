//! A static file server for browser tests: serves one directory on
//! 127.0.0.1 (an ephemeral port), with the content types a browser insists on
//! (`application/wasm` for `WebAssembly.instantiateStreaming`, `text/javascript`
//! for module scripts), and stops when dropped.
//!
//! It is deliberately minimal: GET and HEAD, one request per connection
//! (`Connection: close`), no ranges, no directory listings. This module depends
//! on nothing but std so it can be `#[path]`-included anywhere.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long a connection may take to send its request head. Browsers open
/// speculative connections they may never use; a bound keeps their handler
/// threads from lingering after the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the files under a root directory on `127.0.0.1:<ephemeral port>`.
#[derive(Debug)]
pub struct StaticServer {
    addr: SocketAddr,
    root: PathBuf,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Binds 127.0.0.1:0 and serves `root` from a background thread.
    pub fn start(root: &Path) -> io::Result<StaticServer> {
        let root = root.canonicalize().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot serve {}: {e}", root.display()))
        })?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let accept_thread = {
            let (root, stop, log) = (root.clone(), Arc::clone(&stop), Arc::clone(&log));
            thread::Builder::new()
                .name(format!("static-server-{}", addr.port()))
                .spawn(move || accept_loop(listener, root, stop, log))?
        };
        Ok(StaticServer {
            addr,
            root,
            stop,
            log,
            accept_thread: Some(accept_thread),
        })
    }

    /// `http://127.0.0.1:PORT/` followed by `path` (a leading `/` is optional).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory being served (canonicalized).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Request lines served so far, as `"GET /path 200"`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.log).clone()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks; a connection of our own wakes it up to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A handler thread that panicked cannot leave the log half-written
    // (a push either happened or not), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(
    listener: TcpListener,
    root: PathBuf,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let (root, log) = (root.clone(), Arc::clone(&log));
        // One thread per connection: a browser holds several connections open
        // at once, and a serial server would stall on an idle one.
        let _ = thread::Builder::new()
            .name("static-server-conn".into())
            .spawn(move || {
                let _ = handle_connection(stream, &root, &log);
            });
    }
}

fn handle_connection(stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // a speculative connection closed unused, or our wake-up
    }
    // Drain the headers; nothing in them changes the response.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }

    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = match method {
        "GET" | "HEAD" => respond_file(root, target),
        _ => Response::text(405, "Method Not Allowed", "only GET and HEAD are served\n"),
    };
    lock(log).push(format!("{method} {target} {}", response.status));

    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.reason,
        response.content_type,
        response.body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&response.body)?;
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }
}

fn respond_file(root: &Path, target: &str) -> Response {
    let not_found = || Response::text(404, "Not Found", "not found\n");
    let Some(path) = resolve(root, target) else {
        return not_found();
    };
    let path = if path.is_dir() {
        path.join("index.html")
    } else {
        path
    };
    match fs::read(&path) {
        Ok(body) => Response {
            status: 200,
            reason: "OK",
            content_type: content_type(&path),
            body,
        },
        // Chromium asks for /favicon.ico on its own for every page without a
        // <link rel="icon">; a 404 there would show up as a console error the
        // page under test is not responsible for.
        Err(_) if path == root.join("favicon.ico") => Response {
            status: 204,
            reason: "No Content",
            content_type: "image/x-icon",
            body: Vec::new(),
        },
        Err(_) => not_found(),
    }
}

/// Maps a request target onto a file under `root`, or `None` when it would
/// leave `root` (`..`, absolute segments) or is not valid percent-encoding.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut resolved = root.to_path_buf();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(resolved)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The content type for a file, by extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        // Module scripts are refused unless served with a JavaScript MIME type.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        // `WebAssembly.instantiateStreaming` requires exactly this type.
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "ico" => "image/x-icon",
        // Compressed payloads are decoded by the page itself; the browser must
        // not try to interpret them.
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_rejects_escapes() {
        let root = Path::new("/srv");
        assert_eq!(
            resolve(root, "/a/b.js?x=1"),
            Some(PathBuf::from("/srv/a/b.js"))
        );
        assert_eq!(
            resolve(root, "/a%20b.html"),
            Some(PathBuf::from("/srv/a b.html"))
        );
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/etc"), None);
        assert_eq!(resolve(root, "/%zz"), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("x.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("x.csv.zst")),
            "application/octet-stream"
        );
        assert_eq!(content_type(Path::new("x.svg")), "image/svg+xml");
    }
}
