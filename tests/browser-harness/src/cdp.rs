//! Drives headless Chromium from tests over the Chrome DevTools Protocol.
//!
//! One WebSocket to the browser endpoint carries everything: pages are
//! attached with `flatten: true`, so their commands and events travel on the
//! same socket tagged with a `sessionId`. There is no background reader: the
//! caller that holds the connection lock reads until its own reply arrives and
//! files every event it passes on the way (console errors, requests, load
//! states) under its session. Events that arrive while nobody is calling are
//! picked up by the next call, or by the short drain in
//! [`Page::console_errors`] and [`Page::requests`].
//!
//! Every wait has a deadline; nothing here blocks forever.
//!
//! This module depends only on std, `tungstenite` and `serde_json`, and not on
//! any other module of this crate, so it can be `#[path]`-included elsewhere.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Flags every launch uses: headless, no sandbox (tests often run as root or
/// in containers where the sandbox cannot start), no GPU, and nothing that
/// talks to the network behind the test's back.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Debian's wrapper script loads packaged extensions; tests want none.
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-port=0",
];

/// Binaries tried, in order, on `PATH` when `$CHROMIUM` is not set.
const CHROMIUM_NAMES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
];

/// How many lines of Chromium's stderr are kept for error messages.
const STDERR_TAIL_LINES: usize = 40;

/// How many finished loads a page remembers for [`Page::goto`] to match
/// against (a page full of iframes must not grow this without bound).
const MAX_REMEMBERED_LOADS: usize = 64;

/// How long [`Page::console_errors`] and friends keep reading events that are
/// already on the wire before answering.
const DRAIN_BUDGET: Duration = Duration::from_millis(100);

/// What went wrong, with enough context to act on.
#[derive(Debug)]
pub enum HarnessError {
    /// No Chromium binary could be found.
    ChromiumNotFound(String),
    /// Chromium was found but did not come up (the message has its stderr).
    Launch(String),
    /// The DevTools WebSocket failed or was closed.
    Connection(String),
    /// Chromium answered a command with an error.
    Protocol { method: String, message: String },
    /// Something did not happen within its deadline.
    Timeout(String),
    /// JavaScript threw (or a promise rejected) in [`Page::eval`].
    JavaScript(String),
    /// A navigation failed (`net::ERR_CONNECTION_REFUSED`, a crashed page, ...).
    Navigation(String),
    /// A local I/O failure (temp profile, spawning the process).
    Io(io::Error),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::ChromiumNotFound(msg) => write!(f, "chromium not found: {msg}"),
            HarnessError::Launch(msg) => write!(f, "chromium failed to start: {msg}"),
            HarnessError::Connection(msg) => write!(f, "DevTools connection: {msg}"),
            HarnessError::Protocol { method, message } => {
                write!(f, "DevTools command {method} failed: {message}")
            }
            HarnessError::Timeout(msg) => write!(f, "timed out: {msg}"),
            HarnessError::JavaScript(msg) => write!(f, "JavaScript exception: {msg}"),
            HarnessError::Navigation(msg) => write!(f, "navigation failed: {msg}"),
            HarnessError::Io(err) => write!(f, "I/O error: {err}"),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for HarnessError {
    fn from(err: io::Error) -> Self {
        HarnessError::Io(err)
    }
}

/// How to launch the browser and set up its pages.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Whether pages run JavaScript. `false` disables script execution on each
    /// new page before anything is loaded into it; [`Page::eval`] keeps
    /// working, so tests can still inspect the DOM.
    pub javascript: bool,
    /// Viewport size in CSS pixels.
    pub window_size: (u32, u32),
    /// Chromium binary; `None` means `$CHROMIUM`, then `chromium` & co. on `PATH`.
    pub chromium: Option<PathBuf>,
    /// Extra command-line flags, appended after [`CHROMIUM_FLAGS`].
    pub extra_args: Vec<String>,
    /// How long to wait for Chromium to announce its DevTools endpoint.
    pub launch_timeout: Duration,
    /// Default deadline for a DevTools command and for [`Page::goto`].
    pub command_timeout: Duration,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            javascript: true,
            window_size: (1280, 800),
            chromium: None,
            extra_args: Vec::new(),
            launch_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// Finds the Chromium binary: `$CHROMIUM` if set, else the first of
/// `chromium`, `chromium-browser`, `google-chrome-stable`, `google-chrome` on
/// `PATH`.
pub fn find_chromium() -> Result<PathBuf, HarnessError> {
    if let Some(explicit) = std::env::var_os("CHROMIUM").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&explicit);
        if path.is_file() {
            return Ok(path);
        }
        if let Some(found) = search_path(&path.to_string_lossy()) {
            return Ok(found);
        }
        return Err(HarnessError::ChromiumNotFound(format!(
            "$CHROMIUM is set to {} but no such file exists",
            path.display()
        )));
    }
    CHROMIUM_NAMES
        .iter()
        .find_map(|name| search_path(name))
        .ok_or_else(|| {
            HarnessError::ChromiumNotFound(
                "none of chromium, chromium-browser, google-chrome on PATH; install it with \
             `apt-get install chromium` or point $CHROMIUM at the binary"
                    .to_string(),
            )
        })
}

/// Whether [`find_chromium`] would succeed.
pub fn chromium_available() -> bool {
    find_chromium().is_ok()
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Launches a browser for a test, or decides the test is skipped.
///
/// When Chromium is not installed, this prints a loud notice and returns
/// `None` — unless `REQUIRE_BROWSER=1` is set (CI), in which case it panics.
/// A Chromium that is installed but fails to start always panics: that is a
/// broken environment, not a missing optional tool.
pub fn browser_or_skip() -> Option<Browser> {
    browser_or_skip_with(LaunchOptions::default())
}

/// [`browser_or_skip`] with explicit options.
pub fn browser_or_skip_with(options: LaunchOptions) -> Option<Browser> {
    let required = std::env::var("REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    match Browser::launch_with(options) {
        Ok(browser) => Some(browser),
        Err(err @ HarnessError::ChromiumNotFound(_)) if !required => {
            // Written to the stderr handle rather than with `eprintln!`: the
            // test harness captures the macro's output of passing tests, and a
            // skip must be seen. One write, so parallel tests do not interleave.
            let notice = format!(
                "\n!!! SKIPPING browser test: {err}\n\
                 !!! (set REQUIRE_BROWSER=1 to make a missing browser a failure)\n\n"
            );
            let _ = io::stderr().write_all(notice.as_bytes());
            None
        }
        Err(err) => panic!("{err}"),
    }
}

/// A running headless Chromium with a fresh profile. Dropping it closes the
/// browser (killing it if it does not exit promptly), reaps the process and
/// deletes the profile.
#[derive(Debug)]
pub struct Browser {
    // Field order matters for Drop: the process is ended in `drop` itself, and
    // the profile directory (dropped after it) is removed only then.
    child: Child,
    conn: Arc<Connection>,
    options: LaunchOptions,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    ws_url: String,
    profile: TempDir,
}

impl Browser {
    /// Launches Chromium with [`LaunchOptions::default`].
    pub fn launch() -> Result<Browser, HarnessError> {
        Browser::launch_with(LaunchOptions::default())
    }

    /// Launches Chromium and connects to its DevTools endpoint.
    pub fn launch_with(options: LaunchOptions) -> Result<Browser, HarnessError> {
        let binary = match &options.chromium {
            Some(path) => path.clone(),
            None => find_chromium()?,
        };
        let profile = TempDir::new("browser-harness-profile")?;
        let (width, height) = options.window_size;
        let mut child = Command::new(&binary)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .args(&options.extra_args)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| {
                HarnessError::Launch(format!("cannot run {}: {err}", binary.display()))
            })?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (url_tx, url_rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            // Keeps draining stderr for the browser's whole life: a full pipe
            // would block Chromium's logging. It ends at EOF, when the last
            // Chromium process exits; it is never joined, so a straggling
            // helper process cannot hang the test.
            let spawned = thread::Builder::new()
                .name("chromium-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        if let Some(idx) = line.find("DevTools listening on ") {
                            let url = line[idx + "DevTools listening on ".len()..]
                                .trim()
                                .to_string();
                            let _ = url_tx.send(url);
                        }
                        let mut tail = lock(&tail);
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                });
            if let Err(err) = spawned {
                end_process(&mut child, Duration::ZERO);
                return Err(err.into());
            }
        }

        let ws_url = match url_rx.recv_timeout(options.launch_timeout) {
            Ok(url) => url,
            Err(err) => {
                let (why, grace) = match err {
                    mpsc::RecvTimeoutError::Timeout => (
                        format!(
                            "no \"DevTools listening on\" line within {:?}",
                            options.launch_timeout
                        ),
                        Duration::ZERO,
                    ),
                    // Stderr closed: the process is exiting; let it finish so
                    // its exit status can be reported.
                    mpsc::RecvTimeoutError::Disconnected => (
                        "it closed stderr without announcing a DevTools endpoint".to_string(),
                        Duration::from_secs(2),
                    ),
                };
                let status = match end_process(&mut child, grace) {
                    Some(status) => format!(" ({status})"),
                    None => String::new(),
                };
                return Err(HarnessError::Launch(format!(
                    "{}: {why}{status}; stderr:\n{}",
                    binary.display(),
                    tail_text(&stderr_tail)
                )));
            }
        };

        let conn = match Connection::open(&ws_url, options.command_timeout) {
            Ok(conn) => conn,
            Err(err) => {
                end_process(&mut child, Duration::ZERO);
                return Err(err);
            }
        };
        Ok(Browser {
            child,
            conn: Arc::new(conn),
            options,
            stderr_tail,
            ws_url,
            profile,
        })
    }

    /// Opens a new tab on `about:blank`, attached and with the events the
    /// harness records enabled.
    pub fn new_page(&self) -> Result<Page, HarnessError> {
        let timeout = self.options.command_timeout;
        let target = self.conn.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            timeout,
        )?;
        let target_id = str_field(&target, "targetId", "Target.createTarget")?;
        let attached = self.conn.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            timeout,
        )?;
        let session_id = str_field(&attached, "sessionId", "Target.attachToTarget")?;
        lock(&self.conn.state)
            .sessions
            .insert(session_id.clone(), SessionEvents::default());

        let mut page = Page {
            conn: Arc::clone(&self.conn),
            target_id,
            session_id,
            timeout,
        };
        for method in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            page.call(method, json!({}))?;
        }
        // Lifecycle events carry the loader id, which lets `goto` wait for the
        // load of *its* navigation rather than any load event.
        page.call("Page.setLifecycleEventsEnabled", json!({"enabled": true}))?;
        if !self.options.javascript {
            page.set_javascript_enabled(false)?;
        }
        Ok(page)
    }

    /// The browser's DevTools WebSocket URL.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// The temporary profile directory (removed when the browser is dropped).
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// The operating-system process id of the browser process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines Chromium wrote to stderr, for diagnosing failures.
    pub fn stderr_tail(&self) -> String {
        tail_text(&self.stderr_tail)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A graceful close lets Chromium take its helper processes down with
        // it; killing only the main process can orphan them.
        let _ = self
            .conn
            .call(None, "Browser.close", json!({}), Duration::from_secs(2));
        self.conn.close();
        end_process(&mut self.child, Duration::from_secs(5));
    }
}

/// Waits up to `grace` for the process to exit, then kills it; always reaps
/// it. Returns the exit status if it exited by itself.
fn end_process(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// One tab. Commands go to the browser over the shared connection; the events
/// it records are kept per page.
#[derive(Debug)]
pub struct Page {
    conn: Arc<Connection>,
    target_id: String,
    session_id: String,
    timeout: Duration,
}

impl Page {
    /// Navigates and waits for the page's `load` event (all subresources
    /// fetched, inline and deferred scripts run).
    ///
    /// Fails on network-level errors (connection refused, DNS, aborted);
    /// an HTTP error status still loads its error page and succeeds.
    pub fn goto(&mut self, url: &str) -> Result<(), HarnessError> {
        let started = Instant::now();
        let nav = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = nav
            .get("errorText")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            return Err(HarnessError::Navigation(format!("{url}: {error}")));
        }
        // A same-document navigation (only the #fragment changes) has no
        // loader and fires no load event.
        let Some(loader_id) = nav.get("loaderId").and_then(Value::as_str) else {
            return Ok(());
        };
        let deadline = started + self.timeout;
        let session = self.session_id.as_str();
        self.conn
            .wait_until(deadline, Some(session), |state| {
                Ok(state
                    .sessions
                    .get(session)
                    .is_some_and(|s| s.loaded.iter().any(|l| l == loader_id)))
            })
            .map_err(|err| match err {
                HarnessError::Timeout(_) => HarnessError::Timeout(format!(
                    "{url} did not fire its load event within {:?}",
                    self.timeout
                )),
                other => other,
            })
    }

    /// Evaluates a JavaScript expression in the page and returns its value
    /// (JSON-serialized by the browser; `undefined` becomes `null`). Promises
    /// are awaited. Runs with a user gesture, so `el.click()` counts as one.
    pub fn eval(&mut self, js: &str) -> Result<Value, HarnessError> {
        self.evaluate(js, self.timeout)
    }

    fn evaluate(&mut self, js: &str, timeout: Duration) -> Result<Value, HarnessError> {
        let params = json!({
            "expression": js,
            "returnByValue": true,
            "awaitPromise": true,
            "userGesture": true,
        });
        let mut result =
            self.conn
                .call(Some(&self.session_id), "Runtime.evaluate", params, timeout)?;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(HarnessError::JavaScript(describe_exception(details)));
        }
        Ok(result
            .get_mut("result")
            .and_then(|r| r.get_mut("value"))
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    /// Polls a JavaScript expression until it is truthy.
    ///
    /// An expression that throws counts as "not yet" (the element may not
    /// exist yet), and so does a page that is between documents (a navigation
    /// destroys the context an evaluation runs in); the last such error is
    /// reported if the deadline passes.
    pub fn wait_for(&mut self, js_condition: &str, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        let expression = format!("!!({js_condition})");
        let mut last_error = None;
        loop {
            // Each evaluation gets only the time left, so a condition that
            // awaits a promise cannot outlast the deadline.
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.evaluate(&expression, remaining.max(Duration::from_millis(50))) {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(_) => {}
                Err(HarnessError::JavaScript(msg)) => last_error = Some(msg),
                Err(err @ (HarnessError::Protocol { .. } | HarnessError::Timeout(_))) => {
                    last_error = Some(err.to_string())
                }
                Err(err) => return Err(err),
            }
            if Instant::now() >= deadline {
                let why = last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Err(HarnessError::Timeout(format!(
                    "`{js_condition}` not truthy within {timeout:?}{why}"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Errors the page reported so far: `console.error`/failed
    /// `console.assert` calls, uncaught exceptions and unhandled rejections,
    /// and browser log errors — which include failed resource loads (HTTP
    /// 4xx/5xx, refused connections, blocked requests).
    pub fn console_errors(&self) -> Vec<String> {
        self.conn.drain();
        self.with_events(|events| events.console_errors.clone())
    }

    /// Every URL the page requested so far, in order (redirects included),
    /// so a test can check that nothing left 127.0.0.1 or `file://`.
    pub fn requests(&self) -> Vec<String> {
        self.conn.drain();
        self.with_events(|events| events.requests.clone())
    }

    /// Forgets the console errors and requests recorded so far.
    pub fn clear_recorded(&mut self) {
        self.with_events(|events| {
            events.console_errors.clear();
            events.requests.clear();
        });
    }

    /// Turns JavaScript on or off for this page. Takes effect for documents
    /// loaded afterwards (and stops timers/handlers of the current one).
    pub fn set_javascript_enabled(&mut self, enabled: bool) -> Result<(), HarnessError> {
        self.call(
            "Emulation.setScriptExecutionDisabled",
            json!({"value": !enabled}),
        )?;
        Ok(())
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot_png(&mut self) -> Result<Vec<u8>, HarnessError> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = str_field(&shot, "data", "Page.captureScreenshot")?;
        base64_decode(&data).ok_or_else(|| HarnessError::Protocol {
            method: "Page.captureScreenshot".into(),
            message: "screenshot data is not valid base64".into(),
        })
    }

    /// Sends any DevTools command to this page's session and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, HarnessError> {
        self.conn
            .call(Some(&self.session_id), method, params, self.timeout)
    }

    /// Changes the deadline for commands and navigations on this page.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn with_events<T>(&self, f: impl FnOnce(&mut SessionEvents) -> T) -> T {
        let mut state = lock(&self.conn.state);
        f(state.sessions.entry(self.session_id.clone()).or_default())
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.conn.call(
            None,
            "Target.closeTarget",
            json!({"targetId": self.target_id}),
            Duration::from_secs(2),
        );
        lock(&self.conn.state).sessions.remove(&self.session_id);
    }
}

/// What the harness records from a page's events.
#[derive(Debug, Default)]
struct SessionEvents {
    console_errors: Vec<String>,
    requests: Vec<String>,
    /// Loader ids (one per document, any frame) whose document fired `load`.
    loaded: Vec<String>,
    /// Set when the renderer crashed or the target went away.
    gone: Option<String>,
}

/// The DevTools WebSocket plus everything it has told us.
#[derive(Debug)]
struct Connection {
    state: Mutex<ConnState>,
}

struct ConnState {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    sessions: HashMap<String, SessionEvents>,
    /// Why the connection is unusable, once it is.
    closed: Option<String>,
}

impl fmt::Debug for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnState")
            .field("next_id", &self.next_id)
            .field("sessions", &self.sessions)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn open(ws_url: &str, timeout: Duration) -> Result<Connection, HarnessError> {
        let addr = ws_socket_addr(ws_url)?;
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| HarnessError::Connection(format!("cannot connect to {ws_url}: {e}")))?;
        stream.set_nodelay(true)?;
        // Bounded handshake; afterwards each read sets its own deadline.
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let (ws, _response) = tungstenite::client(ws_url, stream).map_err(|e| {
            HarnessError::Connection(format!("WebSocket handshake with {ws_url}: {e}"))
        })?;
        Ok(Connection {
            state: Mutex::new(ConnState {
                ws,
                next_id: 1,
                sessions: HashMap::new(),
                closed: None,
            }),
        })
    }

    /// Sends a command and reads until its reply, recording events on the way.
    fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        state.check_usable(session)?;
        let id = state.next_id;
        state.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::from(session);
        }
        state.send(&message)?;
        loop {
            let Some(mut reply) = state.read(deadline)? else {
                return Err(HarnessError::Timeout(format!(
                    "no reply to {method} within {timeout:?}"
                )));
            };
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                // An event, or the late reply to a command that timed out.
                state.record_event(&reply);
                state.check_usable(session)?;
                continue;
            }
            if let Some(error) = reply.get("error") {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                let data = error
                    .get("data")
                    .and_then(Value::as_str)
                    .map(|d| format!(" ({d})"));
                return Err(HarnessError::Protocol {
                    method: method.to_string(),
                    message: format!("{message}{}", data.unwrap_or_default()),
                });
            }
            return Ok(reply
                .get_mut("result")
                .map(Value::take)
                .unwrap_or(Value::Null));
        }
    }

    /// Reads events until `done` says so or the deadline passes.
    fn wait_until(
        &self,
        deadline: Instant,
        session: Option<&str>,
        mut done: impl FnMut(&ConnState) -> Result<bool, HarnessError>,
    ) -> Result<(), HarnessError> {
        let mut state = lock(&self.state);
        loop {
            if done(&state)? {
                return Ok(());
            }
            state.check_usable(session)?;
            match state.read(deadline)? {
                Some(event) => state.record_event(&event),
                None => return Err(HarnessError::Timeout("event did not arrive".into())),
            }
        }
    }

    /// Records the events already sent to us, without waiting for more.
    fn drain(&self) {
        let mut state = lock(&self.state);
        let budget_end = Instant::now() + DRAIN_BUDGET;
        while state.closed.is_none() && Instant::now() < budget_end {
            // A tiny read deadline: whatever is buffered in the socket is read,
            // and the first read that would wait ends the drain.
            match state.read(Instant::now() + Duration::from_millis(2)) {
                Ok(Some(event)) => state.record_event(&event),
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn close(&self) {
        let mut state = lock(&self.state);
        if state.closed.is_none() {
            let _ = state.ws.close(None);
            let _ = state.ws.flush();
            state.closed = Some("the browser was closed".into());
        }
    }
}

impl ConnState {
    fn check_usable(&self, session: Option<&str>) -> Result<(), HarnessError> {
        if let Some(why) = &self.closed {
            return Err(HarnessError::Connection(why.clone()));
        }
        if let Some(why) = session
            .and_then(|s| self.sessions.get(s))
            .and_then(|s| s.gone.as_ref())
        {
            return Err(HarnessError::Navigation(why.clone()));
        }
        Ok(())
    }

    fn send(&mut self, message: &Value) -> Result<(), HarnessError> {
        let result = self.ws.send(Message::text(message.to_string()));
        result.map_err(|e| self.fail(format!("send failed: {e}")))
    }

    /// One JSON message, or `None` if none arrived before `deadline`.
    fn read(&mut self, deadline: Instant) -> Result<Option<Value>, HarnessError> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            self.ws.get_ref().set_read_timeout(Some(remaining))?;
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str()).map(Some).map_err(|e| {
                        HarnessError::Connection(format!("malformed DevTools message: {e}"))
                    });
                }
                // CDP only sends text; tungstenite answers pings itself.
                Ok(
                    Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
                ) => {}
                Ok(Message::Close(_)) => {
                    return Err(self.fail("the browser closed the connection".into()))
                }
                // A read timeout leaves tungstenite's state intact: a partly
                // received frame is completed by the next read.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(self.fail(format!("read failed: {e}"))),
            }
        }
    }

    fn fail(&mut self, why: String) -> HarnessError {
        self.closed.get_or_insert_with(|| why.clone());
        HarnessError::Connection(why)
    }

    fn record_event(&mut self, message: &Value) {
        let (Some(method), Some(params)) = (
            message.get("method").and_then(Value::as_str),
            message.get("params"),
        ) else {
            return; // a stale reply
        };
        if method == "Target.detachedFromTarget" {
            // A browser-level event naming the page session that went away.
            if let Some(events) = params
                .get("sessionId")
                .and_then(Value::as_str)
                .and_then(|s| self.sessions.get_mut(s))
            {
                events
                    .gone
                    .get_or_insert_with(|| "the page was closed or detached".into());
            }
            return;
        }
        let Some(events) = message
            .get("sessionId")
            .and_then(Value::as_str)
            .and_then(|s| self.sessions.get_mut(s))
        else {
            return;
        };
        match method {
            // `goto` waits for its own navigation's loader id, which is
            // unique across frames, so loads of iframes never match it.
            "Page.lifecycleEvent" if params.get("name").and_then(Value::as_str) == Some("load") => {
                if let Some(loader) = params.get("loaderId").and_then(Value::as_str) {
                    if events.loaded.len() == MAX_REMEMBERED_LOADS {
                        events.loaded.remove(0);
                    }
                    events.loaded.push(loader.to_string());
                }
            }
            "Runtime.consoleAPICalled" => {
                let kind = params.get("type").and_then(Value::as_str).unwrap_or("");
                if kind == "error" || kind == "assert" {
                    let args = params
                        .get("args")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    let text: Vec<String> = args.iter().map(describe_remote_object).collect();
                    events.console_errors.push(text.join(" "));
                }
            }
            "Runtime.exceptionThrown" => {
                if let Some(details) = params.get("exceptionDetails") {
                    events.console_errors.push(describe_exception(details));
                }
            }
            "Log.entryAdded" => {
                let Some(entry) = params.get("entry") else {
                    return;
                };
                if entry.get("level").and_then(Value::as_str) == Some("error") {
                    let text = entry.get("text").and_then(Value::as_str).unwrap_or("");
                    events
                        .console_errors
                        .push(match entry.get("url").and_then(Value::as_str) {
                            Some(url) if !url.is_empty() => format!("{text} ({url})"),
                            _ => text.to_string(),
                        });
                }
            }
            "Network.requestWillBeSent" => {
                if let Some(url) = params.pointer("/request/url").and_then(Value::as_str) {
                    events.requests.push(url.to_string());
                }
            }
            "Inspector.targetCrashed" => {
                events
                    .gone
                    .get_or_insert_with(|| "the page's renderer crashed".into());
            }
            _ => {}
        }
    }
}

/// `ws://127.0.0.1:PORT/devtools/browser/ID` → the socket address to dial.
fn ws_socket_addr(ws_url: &str) -> Result<SocketAddr, HarnessError> {
    let bad = || HarnessError::Connection(format!("unexpected DevTools URL {ws_url:?}"));
    let rest = ws_url.strip_prefix("ws://").ok_or_else(bad)?;
    let authority = rest.split('/').next().ok_or_else(bad)?;
    authority
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// One console argument as text: strings bare, other primitives as JSON,
/// objects by their description (`Error: ...`, `Array(3)`).
fn describe_remote_object(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(value) => value.to_string(),
        None => object
            .get("description")
            .or_else(|| object.get("unserializableValue"))
            .or_else(|| object.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
    }
}

/// `Runtime.ExceptionDetails` as one line of text plus where it happened.
fn describe_exception(details: &Value) -> String {
    let text = details
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("exception");
    let mut message = match details.get("exception") {
        // The description of an Error is its stack; its first line says what.
        Some(exception) => {
            let described = describe_remote_object(exception);
            let first_line = described.lines().next().unwrap_or("").to_string();
            format!("{text} {first_line}")
        }
        None => text.to_string(),
    };
    if let Some(url) = details
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        let line = details
            .get("lineNumber")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + 1;
        message.push_str(&format!(" ({url}:{line})"));
    }
    message
}

fn str_field(result: &Value, field: &str, method: &str) -> Result<String, HarnessError> {
    result
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| HarnessError::Protocol {
            method: method.to_string(),
            message: format!("reply has no {field}: {result}"),
        })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock (a failing assertion in a test thread)
    // cannot leave the recorded events inconsistent enough to matter.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    lock(tail)
        .iter()
        .map(|line| format!("  {line}\n"))
        .collect()
}

/// Standard base64 (with padding), as CDP encodes binary payloads.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = input.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

/// A uniquely named directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/<prefix>-<pid>-<nanos>-<n>`.
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no unused temp directory name",
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A Chromium helper process may still be writing into the profile for
        // a moment after the main process exited; retry briefly.
        for _ in 0..10 {
            match fs::remove_dir_all(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(
            base64_decode("iVBORw0KGgo=").as_deref(),
            Some(&b"\x89PNG\r\n\x1a\n"[..])
        );
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn ws_url_is_parsed() {
        let addr = ws_socket_addr("ws://127.0.0.1:9222/devtools/browser/abc").expect("valid URL");
        assert_eq!(addr, "127.0.0.1:9222".parse().expect("literal address"));
        assert!(ws_socket_addr("http://127.0.0.1:9222/").is_err());
    }

    #[test]
    fn exceptions_are_one_line() {
        let details = json!({
            "text": "Uncaught",
            "url": "http://127.0.0.1:1/app.js",
            "lineNumber": 9,
            "exception": {"type": "object", "description": "Error: boom\n    at f (app.js:10:5)"}
        });
        assert_eq!(
            describe_exception(&details),
            "Uncaught Error: boom (http://127.0.0.1:1/app.js:10)"
        );
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::new("browser-harness-test").expect("temp dir");
        let path = dir.path().to_path_buf();
        fs::write(path.join("f"), "x").expect("write into temp dir");
        drop(dir);
        assert!(!path.exists());
    }
}
