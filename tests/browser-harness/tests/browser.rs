//! Exercises the harness against a real headless Chromium.
//!
//! Without Chromium these tests print a skip notice and pass; with
//! `REQUIRE_BROWSER=1` they fail instead.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use browser_harness::{
    browser_or_skip, browser_or_skip_with, Browser, HarnessError, LaunchOptions, StaticServer,
    TempDir,
};
use serde_json::json;

const INDEX_HTML: &str = r#"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>fixture</title>
<link rel="stylesheet" href="style.css">
<script src="app.js"></script>
</head>
<body>
<button id="btn" onclick="this.textContent = 'clicked'">click me</button>
<p id="static">static text</p>
<script>
document.body.dataset.ready = "yes";
console.error("boom");
setTimeout(() => { document.body.dataset.late = "yes"; }, 300);
</script>
</body>
</html>
"#;

const MISSING_FETCH_HTML: &str = r#"<!doctype html>
<html><body><script>
fetch("missing.json").then((r) => { document.body.dataset.status = String(r.status); });
</script></body></html>
"#;

const MODULE_HTML: &str = r#"<!doctype html>
<html><body><script type="module">
import { answer } from "./lib.mjs";
document.body.dataset.answer = String(answer);
</script></body></html>
"#;

/// A temp dir with the fixture pages, served on 127.0.0.1.
fn fixture() -> (TempDir, StaticServer) {
    let dir = TempDir::new("browser-harness-fixture").expect("create fixture dir");
    let write = |name: &str, text: &str| {
        fs::write(dir.path().join(name), text).expect("write fixture file");
    };
    write("index.html", INDEX_HTML);
    write("app.js", "window.appLoaded = true;\n");
    write("style.css", "body { font-family: sans-serif; }\n");
    write("missing-fetch.html", MISSING_FETCH_HTML);
    write("module.html", MODULE_HTML);
    write("lib.mjs", "export const answer = 42;\n");
    // The smallest valid WebAssembly module: magic number and version.
    fs::write(dir.path().join("empty.wasm"), b"\0asm\x01\0\0\0").expect("write fixture file");
    write("table.csv", "a,b\n1,2\n");
    let server = StaticServer::start(dir.path()).expect("start static server");
    (dir, server)
}

#[test]
fn served_page_loads_and_is_scriptable() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let (_dir, server) = fixture();
    let mut page = browser.new_page().expect("new page");

    page.goto(&server.url("index.html"))
        .expect("goto index.html");

    // Values of every JSON kind come back by value.
    assert_eq!(page.eval("1 + 1").expect("eval"), json!(2));
    assert_eq!(page.eval("document.title").expect("eval"), json!("fixture"));
    assert_eq!(
        page.eval("({a: [1, 'x', null], b: true})").expect("eval"),
        json!({"a": [1, "x", null], "b": true})
    );
    assert_eq!(page.eval("undefined").expect("eval"), json!(null));
    assert_eq!(page.eval("Promise.resolve(42)").expect("eval"), json!(42));
    assert_eq!(page.eval("window.appLoaded").expect("eval"), json!(true));
    assert_eq!(
        page.eval("document.body.dataset.ready").expect("eval"),
        json!("yes")
    );

    // The inline script's timer fires after the load event.
    page.wait_for(
        "document.body.dataset.late === 'yes'",
        Duration::from_secs(5),
    )
    .expect("wait_for");

    // A click through eval runs the page's handler.
    page.eval("document.getElementById('btn').click()")
        .expect("click");
    assert_eq!(
        page.eval("document.getElementById('btn').textContent")
            .expect("eval"),
        json!("clicked")
    );

    let errors = page.console_errors();
    assert!(
        errors.iter().any(|e| e == "boom"),
        "console errors: {errors:?}"
    );
    assert_eq!(
        errors.len(),
        1,
        "only the page's own console.error: {errors:?}"
    );

    let requests = page.requests();
    for file in ["index.html", "app.js", "style.css"] {
        assert!(
            requests.contains(&server.url(file)),
            "{file} not in {requests:?}"
        );
    }
    let origin = server.url("");
    assert!(
        requests.iter().all(|r| r.starts_with(&origin)),
        "request left {origin}: {requests:?}"
    );
    // The server saw the same requests.
    let served = server.requests();
    assert!(
        served.contains(&"GET /app.js 200".to_string()),
        "{served:?}"
    );
}

#[test]
fn javascript_can_be_disabled() {
    let options = LaunchOptions {
        javascript: false,
        ..LaunchOptions::default()
    };
    let Some(browser) = browser_or_skip_with(options) else {
        return;
    };
    let (_dir, server) = fixture();
    let mut page = browser.new_page().expect("new page");

    page.goto(&server.url("index.html"))
        .expect("goto index.html");
    // The page's scripts did not run, but the DOM can still be inspected.
    assert_eq!(
        page.eval("document.body.dataset.ready ?? null")
            .expect("eval"),
        json!(null)
    );
    assert_eq!(
        page.eval("window.appLoaded ?? null").expect("eval"),
        json!(null)
    );
    assert_eq!(
        page.eval("document.getElementById('static').textContent")
            .expect("eval"),
        json!("static text")
    );
    assert!(
        page.console_errors().is_empty(),
        "{:?}",
        page.console_errors()
    );

    // Turned back on, the next load runs them.
    page.set_javascript_enabled(true)
        .expect("enable JavaScript");
    page.goto(&server.url("index.html")).expect("reload");
    assert_eq!(
        page.eval("document.body.dataset.ready").expect("eval"),
        json!("yes")
    );
}

#[test]
fn file_urls_load() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let (dir, _server) = fixture();
    let mut page = browser.new_page().expect("new page");

    let url = format!("file://{}", dir.path().join("index.html").display());
    page.goto(&url).expect("goto file://");
    assert_eq!(
        page.eval("document.body.dataset.ready").expect("eval"),
        json!("yes")
    );
    assert_eq!(page.eval("window.appLoaded").expect("eval"), json!(true));
    let requests = page.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("file://")),
        "{requests:?}"
    );
    assert!(requests.contains(&url), "{requests:?}");
}

#[test]
fn failed_fetches_are_console_errors() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let (_dir, server) = fixture();
    let mut page = browser.new_page().expect("new page");

    page.goto(&server.url("missing-fetch.html")).expect("goto");
    page.wait_for(
        "document.body.dataset.status === '404'",
        Duration::from_secs(5),
    )
    .expect("fetch finished");
    let errors = page.console_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("404") && e.contains("missing.json")),
        "console errors: {errors:?}"
    );
}

#[test]
fn failures_are_errors_not_hangs() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let (_dir, server) = fixture();
    let mut page = browser.new_page().expect("new page");
    page.goto(&server.url("index.html")).expect("goto");

    match page.eval("throw new Error('nope')") {
        Err(HarnessError::JavaScript(msg)) => assert!(msg.contains("Error: nope"), "{msg}"),
        other => panic!("expected a JavaScript error, got {other:?}"),
    }
    match page.eval("Promise.reject(new TypeError('later'))") {
        Err(HarnessError::JavaScript(msg)) => assert!(msg.contains("TypeError: later"), "{msg}"),
        other => panic!("expected a JavaScript error, got {other:?}"),
    }
    // Exceptions from `eval` are the caller's, not the page's console errors.
    assert_eq!(page.console_errors(), vec!["boom".to_string()]);

    let started = Instant::now();
    match page.wait_for(
        "document.querySelector('#never').id",
        Duration::from_millis(300),
    ) {
        Err(HarnessError::Timeout(msg)) => {
            assert!(msg.contains("Cannot read properties of null"), "{msg}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // A port nobody listens on: the navigation fails instead of waiting.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    match page.goto(&format!("http://127.0.0.1:{closed_port}/")) {
        Err(HarnessError::Navigation(msg)) => {
            assert!(msg.contains("ERR_CONNECTION_REFUSED"), "{msg}")
        }
        other => panic!("expected a navigation error, got {other:?}"),
    }

    // A promise that never settles times out, and the page stays usable.
    page.set_timeout(Duration::from_millis(500));
    match page.eval("new Promise(() => {})") {
        Err(HarnessError::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    page.set_timeout(Duration::from_secs(30));
    assert_eq!(page.eval("2 * 21").expect("eval after timeout"), json!(42));
}

#[test]
fn content_types_satisfy_the_browser() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let (_dir, server) = fixture();
    let mut page = browser.new_page().expect("new page");

    // Module scripts are refused without a JavaScript MIME type.
    page.goto(&server.url("module.html")).expect("goto");
    page.wait_for(
        "document.body.dataset.answer === '42'",
        Duration::from_secs(5),
    )
    .expect("module script ran");
    // Streaming compilation is refused without `application/wasm`.
    let wasm = "WebAssembly.instantiateStreaming(fetch('empty.wasm')).then(() => 'ok')";
    assert_eq!(page.eval(wasm).expect("instantiateStreaming"), json!("ok"));
    let csv = "fetch('table.csv').then((r) => r.headers.get('content-type'))";
    assert_eq!(
        page.eval(csv).expect("fetch csv"),
        json!("text/csv; charset=utf-8")
    );
    assert!(
        page.console_errors().is_empty(),
        "{:?}",
        page.console_errors()
    );
}

#[test]
fn screenshots_are_png() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let (_dir, server) = fixture();
    let mut page = browser.new_page().expect("new page");
    page.goto(&server.url("index.html")).expect("goto");
    let png = page.screenshot_png().expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

#[test]
fn dropping_the_browser_ends_every_process_and_removes_the_profile() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let pid = browser.pid();
    let profile = browser.profile_dir().to_path_buf();
    let (_dir, server) = fixture();
    {
        let mut page = browser.new_page().expect("new page");
        page.goto(&server.url("index.html")).expect("goto");
    }
    assert!(
        processes_using(&profile).len() > 1,
        "expected helper processes while running"
    );

    let started = Instant::now();
    drop(browser);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closing took {:?}",
        started.elapsed()
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "browser process {pid} still exists"
    );
    // Helper processes exit on their own once the browser is gone; give them
    // a moment rather than asserting on a race.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_using(&profile).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_using(&profile),
        Vec::<String>::new(),
        "left-over chromium processes"
    );
    assert!(
        !profile.exists(),
        "profile dir {} not removed",
        profile.display()
    );
}

#[test]
fn missing_chromium_is_reported_clearly() {
    let options = LaunchOptions {
        chromium: Some("/nonexistent/chromium".into()),
        launch_timeout: Duration::from_secs(5),
        ..LaunchOptions::default()
    };
    match Browser::launch_with(options) {
        Err(HarnessError::Launch(msg)) => assert!(msg.contains("/nonexistent/chromium"), "{msg}"),
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[test]
fn a_browser_that_dies_at_startup_is_reported_with_its_status() {
    let options = LaunchOptions {
        chromium: Some("/bin/false".into()),
        launch_timeout: Duration::from_secs(5),
        ..LaunchOptions::default()
    };
    let started = Instant::now();
    match Browser::launch_with(options) {
        Err(HarnessError::Launch(msg)) => {
            assert!(
                msg.contains("without announcing") && msg.contains("exit status: 1"),
                "{msg}"
            )
        }
        other => panic!("expected a launch error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

/// PIDs and command lines (Linux `/proc`) of processes whose command line
/// mentions `profile`.
fn processes_using(profile: &Path) -> Vec<String> {
    let needle = profile.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}
