//! A generated report opened in real headless Chromium: served on
//! 127.0.0.1, as a single file from `file://`, and with JavaScript off.
//! Also the viewer's redraw time after a layer change, on synthetic studies
//! of the default report's size (one and two models) and of a 70B model's
//! (printed, not asserted: timing is a benchmark's job).
//!
//! Without Chromium these tests print a notice and pass, unless
//! `REQUIRE_BROWSER=1` (set by `scripts/test.sh`) makes them fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use browser_harness::{browser_or_skip, browser_or_skip_with, LaunchOptions, Page, StaticServer};
use serde_json::Value;

/// Long enough for the wasm to compile and the first draw on a loaded
/// 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A small study whose prompt text and condition names would be markup if
/// anything were left unescaped: they try to set `window.pwned`.
const HOSTILE_EXPERIMENT: &str = r#"
name = "hostile"
[capture]
max_new_tokens = 3
[analysis]
permutations = 20
bootstrap = 20
cv_folds = 2

[[tasks]]
kind = "reading-comprehension"
shots = 1
instances_per_condition = 2
names = ["<script>window.pwned=1</script>", "Max", "Olivia"]
activities = [
  { phrase = "reading a \"><img src=x onerror=\"window.pwned=2\">", keywords = ["read"] },
  { phrase = "cooking </text><script>window.pwned=3</script>", keywords = ["cook"] },
  { phrase = "painting a fence", keywords = ["paint"] },
]
"#;

/// The report generated once for every test of this file.
fn report() -> &'static Path {
    static REPORT: OnceLock<PathBuf> = OnceLock::new();
    REPORT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("engine-browser-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let experiment = dir.join("hostile.toml");
        std::fs::write(&experiment, HOSTILE_EXPERIMENT).expect("write experiment");
        let out = dir.join("reports").join("hostile");
        let result = Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(["report", "-q", "--single-file"])
            .arg(&experiment)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run the engine");
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

fn wait_ready(page: &mut Page) {
    page.wait_for(
        "document.body.dataset.viewer === 'ready' || document.body.dataset.viewer === 'error'",
        READY_TIMEOUT,
    )
    .expect("the explorer settles");
    let state = page.eval("document.body.dataset.viewer").expect("eval");
    let status = page
        .eval("document.getElementById('viewer-status').textContent")
        .expect("eval");
    assert_eq!(state, "ready", "explorer status: {status}");
}

/// A fingerprint of a canvas's pixels.
fn canvas(page: &mut Page, figure: &str) -> String {
    let value = page
        .eval(&format!(
            "document.getElementById('canvas-{figure}').toDataURL()"
        ))
        .expect("read canvas");
    value.as_str().unwrap_or_default().to_string()
}

fn number(page: &mut Page, name: &str) -> String {
    page.eval(&format!(
        "document.querySelector('[data-number={name}]').textContent"
    ))
    .expect("read number")
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn choose(page: &mut Page, control: &str, value: &str) {
    page.eval(&format!(
        "(() => {{ const c = document.getElementById('control-{control}'); c.value = '{value}'; c.dispatchEvent(new Event('change')); }})()"
    ))
    .expect("change the control");
}

fn static_svg_count(page: &mut Page) -> u64 {
    page.eval("document.querySelectorAll('section.analysis figure.static svg').length")
        .expect("count figures")
        .as_u64()
        .unwrap_or(0)
}

/// The checks shared by the served and the single-file report.
fn exercise_explorer(page: &mut Page, how: &str) {
    wait_ready(page);
    let errors = page.console_errors();
    assert!(errors.is_empty(), "{how}: console errors {errors:?}");
    assert!(static_svg_count(page) >= 6, "{how}: static figures");
    assert_eq!(
        page.eval("window.pwned === undefined").expect("eval"),
        Value::Bool(true),
        "{how}: hostile text ran as code"
    );

    // A layer change redraws the matrices and changes the numbers.
    let layers = page
        .eval("document.getElementById('control-layer').options.length")
        .expect("eval")
        .as_u64()
        .unwrap_or(0);
    assert_eq!(layers, 30, "{how}: one option per layer");
    choose(page, "layer", "3");
    let before_canvas = canvas(page, "matrices");
    let before = number(page, "alignment_k");
    assert_eq!(number(page, "layer"), "3");
    choose(page, "layer", "20");
    let after_canvas = canvas(page, "matrices");
    let after = number(page, "alignment_k");
    assert_eq!(number(page, "layer"), "20", "{how}: the layer shown");
    assert_ne!(
        before_canvas, after_canvas,
        "{how}: the matrices were not redrawn"
    );
    assert_ne!(
        before, after,
        "{how}: alignment did not change with the layer"
    );
    let hash = page.eval("location.hash").expect("eval");
    assert!(
        hash.as_str().unwrap_or_default().contains("layer=20"),
        "{how}: fragment {hash}"
    );
    let redraw = page
        .eval("document.getElementById('explorer').dataset.redrawMs")
        .expect("eval");
    eprintln!(
        "{how}: redraw after a layer change took {redraw} ms (a small study of the default model)"
    );

    // A condition subset recomputes the alignment in the browser.
    page.eval("(() => { const b = document.querySelector('#control-conditions input'); b.checked = false; b.dispatchEvent(new Event('change')); })()")
        .expect("untick a condition");
    assert_ne!(number(page, "targets"), "6", "{how}: subset not applied");
    let subset = number(page, "alignment_k");
    assert_ne!(
        subset, after,
        "{how}: the subset's alignment was not recomputed"
    );

    // The keyboard reaches every control.
    let focusable = page
        .eval("[...document.querySelectorAll('#controls select, #controls input')].every(e => e.tabIndex >= 0 && !e.disabled || e.id === 'control-measure' || e.id === 'control-head')")
        .expect("eval");
    assert_eq!(
        focusable,
        Value::Bool(true),
        "{how}: controls reachable by keyboard"
    );
    let errors = page.console_errors();
    assert!(errors.is_empty(), "{how}: console errors {errors:?}");
}

#[test]
fn the_served_report_redraws_for_a_selection_and_restores_it_from_the_url() {
    let dir = report();
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let server = StaticServer::start(dir).expect("serve the report");

    // Static figures are in the page itself, before any script runs.
    let html = std::fs::read_to_string(dir.join("index.html")).expect("read page");
    assert!(html.matches("<svg").count() >= 6, "static SVG in the HTML");
    assert!(html.contains("Content-Security-Policy"));

    let mut page = browser.new_page().expect("page");
    page.goto(&server.url("index.html"))
        .expect("open the report");
    exercise_explorer(&mut page, "served");
    let origin = server.url("");
    let requests = page.requests();
    assert!(
        requests.iter().all(|r| r.starts_with(&origin)),
        "a request left the report's origin: {requests:?}"
    );

    // A link with a fragment reproduces the view.
    let fragment =
        "model=0&task=0&layer=7&head=2&hypothesis=1&comparator=1&measure=0&conditions=0,2";
    let mut linked = browser.new_page().expect("page");
    linked
        .goto(&format!("{}#{fragment}", server.url("index.html")))
        .expect("open the link");
    wait_ready(&mut linked);
    for (control, value) in [
        ("layer", "7"),
        ("head", "2"),
        ("hypothesis", "1"),
        ("comparator", "1"),
    ] {
        let shown = linked
            .eval(&format!(
                "document.getElementById('control-{control}').value"
            ))
            .expect("eval");
        assert_eq!(shown, value, "control {control}");
    }
    let ticked = linked
        .eval("[...document.querySelectorAll('#control-conditions input')].map(b => b.checked)")
        .expect("eval");
    assert_eq!(ticked, serde_json::json!([true, false, true]));
    assert_eq!(number(&mut linked, "layer"), "7");
    assert_eq!(number(&mut linked, "head"), "head 2");
    assert!(
        linked.console_errors().is_empty(),
        "{:?}",
        linked.console_errors()
    );
}

#[test]
fn the_single_file_report_works_from_a_file_url() {
    let dir = report();
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let file = dir.join("hostile.html");
    let bytes = std::fs::metadata(&file).expect("single file written").len();
    eprintln!("single-file report: {:.2} MB", bytes as f64 / 1e6);
    let mut page = browser.new_page().expect("page");
    page.goto(&format!("file://{}", file.display()))
        .expect("open the single file");
    exercise_explorer(&mut page, "single file");
    let requests = page.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with("file://") || r.starts_with("data:")),
        "the single file fetched something: {requests:?}"
    );
}

#[test]
fn without_javascript_every_figure_is_still_there() {
    let dir = report();
    let Some(browser) = browser_or_skip_with(LaunchOptions {
        javascript: false,
        ..LaunchOptions::default()
    }) else {
        return;
    };
    let server = StaticServer::start(dir).expect("serve the report");
    for url in [
        server.url("index.html"),
        format!("file://{}", dir.join("hostile.html").display()),
    ] {
        let mut page = browser.new_page().expect("page");
        page.set_javascript_enabled(false)
            .expect("turn off JavaScript");
        page.goto(&url).expect("open");
        // Every figure of the page, drawn statically.
        let html = std::fs::read_to_string(dir.join("index.html")).expect("read");
        let expected = html.matches("<figure class=\"static\"").count() as u64;
        assert!(expected >= 6);
        assert_eq!(static_svg_count(&mut page), expected, "{url}");
        let explorer_hidden = page
            .eval("document.getElementById('explorer').hidden")
            .expect("eval");
        assert_eq!(explorer_hidden, Value::Bool(true));
        assert_eq!(
            page.eval("window.pwned === undefined").expect("eval"),
            Value::Bool(true)
        );
        let imgs = page
            .eval("document.querySelectorAll('img').length")
            .expect("eval");
        assert_eq!(imgs, 0, "hostile markup became an element");
    }
}

/// Replaces the report's bundle with `bytes` in a copy of the report and
/// checks that the page explains, in words, why the explorer cannot start.
fn assert_bad_bundle_message(bytes: &[u8], expected: &str) {
    let dir = report();
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let copy = std::env::temp_dir().join(format!(
        "engine-browser-bad-{}-{}",
        std::process::id(),
        expected.len()
    ));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("create copy");
    for name in ["index.html", "report.js", "viewer.js", "viewer_bg.wasm"] {
        std::fs::copy(dir.join(name), copy.join(name)).expect("copy");
    }
    std::fs::write(copy.join("bundle.safetensors.zst"), bytes).expect("write bad bundle");
    let server = StaticServer::start(&copy).expect("serve");
    let mut page = browser.new_page().expect("page");
    page.goto(&server.url("index.html")).expect("open");
    page.wait_for("document.body.dataset.viewer === 'error'", READY_TIMEOUT)
        .expect("the page reports the error");
    let status = page
        .eval("document.getElementById('viewer-status').textContent")
        .expect("eval");
    let status = status.as_str().unwrap_or_default();
    assert!(status.contains(expected), "status: {status}");
    assert!(static_svg_count(&mut page) >= 6, "the static figures stay");
    let _ = std::fs::remove_dir_all(&copy);
}

#[test]
fn a_damaged_bundle_is_explained_in_the_page() {
    let good = std::fs::read(report().join("bundle.safetensors.zst")).expect("read bundle");
    assert_bad_bundle_message(&good[..good.len() / 2], "damaged or truncated");
    assert_bad_bundle_message(b"<html>oops</html>", "not a report bundle");
}

#[test]
fn a_bundle_from_a_future_version_is_explained_in_the_page() {
    let mut bundle = viewer::bundle::Bundle::decode(
        &std::fs::read(report().join("bundle.safetensors.zst")).expect("read bundle"),
    )
    .expect("decode");
    bundle.manifest.version = viewer::bundle::FORMAT_VERSION + 1;
    let raw = bundle.to_safetensors().expect("encode");
    let compressed = zstd::bulk::compress(&raw, 3).expect("compress");
    assert_bad_bundle_message(
        &compressed,
        &format!("format version {}", viewer::bundle::FORMAT_VERSION + 1),
    );
}

/// How long a benchmark changes the layer before it measures.
const WARM_UP: Duration = Duration::from_secs(3);

/// Layers to change to in a benchmark: spread over the depth, clamped to
/// the study's layers (so every change is a change).
const BENCHMARK_LAYERS: [usize; 9] = [3, 20, 7, 29, 12, 1, 25, 16, 9];

/// The redraw after a layer change of a synthetic study of `models` models
/// of `spec`'s size: the times (ms, as the page measures them around
/// `viewer.draw`) of a change to each of [`BENCHMARK_LAYERS`], after
/// [`WARM_UP`] of changes (the browser compiles the wasm once more, better,
/// in the background while the page first runs it).
fn redraw_times(spec: viewer::synthetic::Spec, models: usize, name: &str) -> Option<Vec<f64>> {
    let browser = browser_or_skip()?;
    let dir = std::env::temp_dir().join(format!("engine-browser-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create dir");
    let bundle = viewer::synthetic::bundle_of_models(spec, models);
    let size = engine::report::write_bundle(&dir.join("bundle.safetensors.zst"), &bundle)
        .expect("write bundle");
    eprintln!(
        "{name}: {models} model(s), {} layers, {} heads, {} targets: {:.1} MB compressed",
        spec.layers,
        spec.heads,
        spec.targets,
        size as f64 / 1e6
    );
    engine::report::render_report(&dir, &bundle, &engine::report::RenderOptions::default())
        .expect("render");
    let server = StaticServer::start(&dir).expect("serve");
    let mut page = browser.new_page().expect("page");
    page.goto(&server.url("index.html")).expect("open");
    wait_ready(&mut page);
    let models_offered = page
        .eval("document.getElementById('control-model').options.length")
        .expect("eval");
    assert_eq!(
        models_offered, models as u64,
        "{name}: one option per model"
    );
    let last = spec.layers - 1;
    let started = std::time::Instant::now();
    for i in 0.. {
        if started.elapsed() > WARM_UP && i >= 2 {
            break;
        }
        choose(&mut page, "layer", &((i % 2) * last).to_string());
    }
    let mut times = Vec::new();
    for layer in BENCHMARK_LAYERS.map(|l| l * last / 29) {
        choose(&mut page, "layer", &layer.to_string());
        assert_eq!(number(&mut page, "layer"), layer.to_string(), "{name}");
        let ms = page
            .eval("Number(document.getElementById('explorer').dataset.redrawMs)")
            .expect("eval")
            .as_f64()
            .unwrap_or(f64::NAN);
        times.push(ms);
    }
    let errors = page.console_errors();
    assert!(errors.is_empty(), "{name}: console errors {errors:?}");
    let _ = std::fs::remove_dir_all(&dir);
    Some(times)
}

/// The redraw time after a layer change, printed for the default report's
/// size, a two-model report of that size and a 70B-sized study (issue 14:
/// within a frame, 16 ms, for the first; within 100 ms for the last, in
/// headless Chromium on a 2-core machine). Synthetic studies: the default
/// report's own run takes minutes; the drawing depends only on the sizes.
/// Printed, not asserted: timing is a benchmark's job, and a loaded
/// machine would make such an assertion flaky. The other tests of this
/// file run beside it; for numbers worth quoting, run it alone
/// (`cargo test --release --test report_browser redraw_after -- --nocapture`).
#[test]
fn the_viewer_redraw_after_a_layer_change_is_measured() {
    use viewer::synthetic::Spec;
    for (spec, models, name) in [
        (Spec::DEFAULT_SIZED, 1, "default-sized"),
        (Spec::DEFAULT_SIZED, 2, "two-model default-sized"),
        (Spec::LLAMA_70B, 1, "70B-sized"),
    ] {
        let Some(mut times) = redraw_times(spec, models, name) else {
            return;
        };
        let all = times.clone();
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: redraw after a layer change: median {:.1} ms, fastest {:.1}, slowest {:.1} (of {all:?})",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
}
