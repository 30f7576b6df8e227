//! `engine report` as a long-running job: interrupted runs resume and give
//! the same bytes, Ctrl-C stops cleanly, one writer per folder, shards merge
//! into the single-machine report, a report reproduces itself, only what a
//! change affects is captured again, and a full disk or a model file
//! replaced mid-run is a clear error that loses nothing. Real default model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SMALL_EXPERIMENT: &str = include_str!("fixtures/small-experiment.toml");
/// Every run of this file uses the same date, so that reports made on
/// either side of midnight still compare byte for byte.
const DATE: &str = "1790000000";

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", DATE)
        .output()
        .expect("run the engine binary")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-runs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn experiment_file(dir: &Path) -> String {
    let path = dir.join("small.toml");
    std::fs::write(&path, SMALL_EXPERIMENT).expect("write experiment");
    path.to_str().expect("utf-8").to_string()
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr + &String::from_utf8_lossy(&out.stdout)
}

/// An uninterrupted run of the small experiment: the reference bundle.
fn reference() -> &'static Path {
    static REFERENCE: OnceLock<PathBuf> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = scratch("reference");
        let out = dir.join("reports").join("small");
        let experiment = experiment_file(&dir);
        ok(&engine(&[
            "report",
            "-q",
            &experiment,
            "--out",
            out.to_str().expect("utf-8"),
        ]));
        out
    })
}

/// Every figure of the report in `out` as a reader sees it: its title drawn
/// whole ("model · task", then its subject; never cut short with "…"), a
/// PNG beside its SVG, and a numbered caption that names it.
fn assert_figures_read_whole(out: &Path) {
    let bundle = viewer::bundle::Bundle::decode(
        &std::fs::read(out.join("bundle.safetensors.zst")).expect("read bundle"),
    )
    .expect("decode");
    let owners: Vec<String> = bundle
        .manifest
        .models
        .iter()
        .flat_map(|m| {
            bundle
                .manifest
                .tasks
                .iter()
                .map(move |t| format!("{} · {}", m.name, t.name))
        })
        .collect();
    let mut svgs = 0;
    for entry in std::fs::read_dir(out.join("figures")).expect("figures folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("svg") {
            continue;
        }
        let svg = std::fs::read_to_string(&path).expect("read svg");
        let title = viewer::charts::drawn_title(&svg);
        assert!(!title.contains('…'), "{}: {title}", path.display());
        let owner = owners
            .iter()
            .find(|o| title.starts_with(o.as_str()))
            .unwrap_or_else(|| panic!("{}: {title:?} names no model · task", path.display()));
        assert!(
            title.len() > owner.len() + 8,
            "{}: {title:?} has no subject",
            path.display()
        );
        assert!(
            path.with_extension("png").is_file(),
            "no PNG beside {}",
            path.display()
        );
        svgs += 1;
    }
    let page = std::fs::read_to_string(out.join("index.html")).expect("read page");
    let captions = page.matches("<figcaption><strong>Figure ").count();
    assert_eq!(captions, svgs, "one numbered caption per static figure");
    for owner in &owners {
        assert!(
            page.contains(&format!(" · {owner}.</strong> ")),
            "no caption names {owner}"
        );
    }
}

#[test]
fn the_default_report_draws_every_title_whole() {
    // The committed demo report is the default preset on the default model:
    // drawn again from its bundle with this checkout's charts.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/paper");
    let bytes = std::fs::read(committed.join("bundle.safetensors.zst")).expect("demo bundle");
    let bundle = viewer::bundle::Bundle::decode(&bytes).expect("decode");
    let dir = scratch("default-titles");
    std::fs::write(dir.join("bundle.safetensors.zst"), &bytes).expect("copy bundle");
    engine::report::render_report(&dir, &bundle, &engine::report::RenderOptions::default())
        .expect("render");
    assert_figures_read_whole(&dir);
    // Every hypothesis has its own alignment figure (the competing "same
    // person" one included).
    let page = std::fs::read_to_string(dir.join("index.html")).expect("read page");
    for task in &bundle.manifest.tasks {
        for hypothesis in &task.hypotheses {
            assert!(
                page.contains(&format!(
                    "{}, hypothesis “{hypothesis}”.</strong> At layer",
                    task.name
                )),
                "no alignment figure for {hypothesis}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn same_report(a: &Path, b: &Path) {
    for file in [
        "bundle.safetensors.zst",
        "index.html",
        "data/rsa_alignment.csv",
        "data/prompts.csv",
    ] {
        let x = std::fs::read(a.join(file)).expect("read");
        let y = std::fs::read(b.join(file)).expect("read");
        assert!(
            x == y,
            "{file} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn cached_prompts(out: &Path) -> usize {
    let Ok(models) = std::fs::read_dir(out.join("cache")) else {
        return 0;
    };
    models
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rec"))
        .count()
}

/// Starts `engine report ARGS --out OUT` and returns once `after` prompts
/// are in its cache (or two minutes have passed), the run still going.
fn start_report(args: &[&str], out: &Path, after: usize) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("report")
        .args(args)
        .args(["--out", out.to_str().expect("utf-8")])
        .env("SOURCE_DATE_EPOCH", DATE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the engine");
    let started = Instant::now();
    while cached_prompts(out) < after && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Starts a report run and stops it with `signal` once `after` prompts are
/// in the cache; returns the exit status.
fn interrupt(experiment: &str, out: &Path, signal: &str, after: usize) -> Output {
    let child = start_report(&[experiment], out, after);
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("send the signal");
    assert!(status.success());
    child.wait_with_output().expect("wait for the engine")
}

#[test]
fn a_killed_run_resumes_to_the_same_bytes() {
    let dir = scratch("killed");
    let experiment = experiment_file(&dir);
    let out = dir.join("reports").join("small");
    let killed = interrupt(&experiment, &out, "-KILL", 5);
    assert!(!killed.status.success());
    let kept = cached_prompts(&out);
    assert!((5..16).contains(&kept), "{kept} prompts kept");
    assert!(
        !out.join("bundle.safetensors.zst").exists(),
        "nothing half-written left as if complete"
    );
    // A stale lock of the killed process does not block the resumed run.
    let resumed = ok(&engine(&[
        "report",
        &experiment,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        resumed.contains(&format!("resuming, {kept} of 16 prompts already captured")),
        "{resumed}"
    );
    same_report(reference(), &out);

    // After completion, a run only re-renders: nothing is captured again.
    let again = ok(&engine(&[
        "report",
        &experiment,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        again.contains("(0 captured now, 16 from the cache)"),
        "{again}"
    );
    same_report(reference(), &out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_stops_cleanly_and_says_how_to_resume() {
    let dir = scratch("ctrl-c");
    let experiment = experiment_file(&dir);
    let out = dir.join("reports").join("small");
    let stopped = interrupt(&experiment, &out, "-INT", 3);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("captured and saved; run the same command again to resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !out.join(".engine-report.lock").exists(),
        "the lock is released"
    );
    ok(&engine(&[
        "report",
        "-q",
        &experiment,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    same_report(reference(), &out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_folder_being_written_by_another_run_is_refused() {
    let dir = scratch("locked");
    let experiment = experiment_file(&dir);
    let out = dir.join("reports").join("small");
    std::fs::create_dir_all(&out).expect("create");
    // This test process is alive: its id in the lock means "busy".
    std::fs::write(
        out.join(".engine-report.lock"),
        format!("{}\n", std::process::id()),
    )
    .expect("write lock");
    let refused = engine(&["report", &experiment, "--out", out.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is writing to"), "{stderr}");
    assert!(
        out.join(".engine-report.lock").exists(),
        "someone else's lock stays"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_output_folder_is_a_clear_error() {
    let refused = engine(&["report", "--out", "/dev/null/report"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot create the report folder `/dev/null/report`"),
        "{stderr}"
    );
}

#[test]
fn shards_merge_into_the_single_machine_report() {
    let dir = scratch("shards");
    let experiment = experiment_file(&dir);
    let mut shard_files = Vec::new();
    let mut shares = Vec::new();
    for i in 1..=3 {
        let out = dir.join(format!("machine-{i}"));
        ok(&engine(&[
            "report",
            "-q",
            &experiment,
            "--shard",
            &format!("{i}/3"),
            "--out",
            out.to_str().expect("utf-8"),
        ]));
        let file = out.join("shards").join(format!("shard-{i}-of-3.zip"));
        assert!(file.is_file());
        shares.push(cached_prompts(&out));
        shard_files.push(file.to_str().expect("utf-8").to_string());
    }
    // A shard captures its share only: whole answer batches of 3 (3, 3, 2 in
    // each task), dealt round-robin.
    assert_eq!(shares, [6, 6, 4]);
    let merged = dir.join("reports").join("small");
    let mut args = vec!["merge", "-q"];
    args.extend(shard_files[..2].iter().map(String::as_str));
    args.extend(["--out", merged.to_str().expect("utf-8")]);
    let missing = engine(&args);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("shards 3 of 3 are missing"), "{stderr}");

    let mut args = vec!["merge", "-q"];
    args.extend(shard_files.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().expect("utf-8")]);
    ok(&engine(&args));
    same_report(reference(), &merged);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_shard_argument_is_a_clear_error() {
    let refused = engine(&["report", "--shard", "4/3"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("write it as i/N"), "{stderr}");
}

#[test]
fn a_report_reproduces_itself() {
    let original = reference();
    let out = original.with_file_name("small-reproduced");
    let _ = std::fs::remove_dir_all(&out);
    let text = ok(&engine(&[
        "report",
        "--reproduce",
        original.to_str().expect("utf-8"),
    ]));
    assert!(
        text.contains("reproduced: the bundle is byte-identical"),
        "{text}"
    );
    same_report(original, &out);
}

#[test]
fn a_new_task_captures_only_its_own_prompts() {
    let dir = scratch("partial");
    let out = dir.join("reports").join("small");
    // The small experiment without its second task…
    let first_task_only = SMALL_EXPERIMENT
        .split("[[tasks]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[tasks]]");
    let path = dir.join("one.toml");
    std::fs::write(&path, first_task_only).expect("write");
    ok(&engine(&[
        "report",
        "-q",
        path.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert_eq!(cached_prompts(&out), 8);
    // …then with it: the first task's prompts come from the cache.
    let experiment = experiment_file(&dir);
    let text = ok(&engine(&[
        "report",
        &experiment,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        text.contains("resuming, 8 of 16 prompts already captured"),
        "{text}"
    );
    same_report(reference(), &out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_models_are_compared_side_by_side_on_the_same_prompts() {
    let dir = scratch("two-models");
    let experiment = experiment_file(&dir);
    let out = dir.join("reports").join("small");
    let model = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    let model = model.to_str().expect("utf-8");
    // The same file twice: the second run of every prompt comes from the
    // cache (same SHA-256), and the report still names two models.
    let text = ok(&engine(&[
        "report",
        &experiment,
        "--model",
        model,
        "--model",
        model,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        text.contains("(0 captured now, 16 from the cache)"),
        "{text}"
    );
    let bundle = viewer::bundle::Bundle::decode(
        &std::fs::read(out.join("bundle.safetensors.zst")).expect("read bundle"),
    )
    .expect("decode");
    let names: Vec<&str> = bundle
        .manifest
        .models
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["SmolLM2-135M-Instruct.Q4_1", "SmolLM2-135M-Instruct.Q4_1-2"]
    );
    let page = std::fs::read_to_string(out.join("index.html")).expect("read page");
    for name in names {
        assert!(
            page.contains(&format!(
                "data-model=\"{name}\" data-task=\"reading-comprehension\""
            )),
            "no panel of {name}"
        );
    }
    assert_figures_read_whole(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_leaves_the_previous_report_whole() {
    let dir = scratch("full-disk");
    let out = dir.join("reports").join("small");
    let out_arg = out.to_str().expect("utf-8");
    let experiment = experiment_file(&dir);
    ok(&engine(&["report", "-q", &experiment, "--out", out_arg]));
    let before: Vec<Vec<u8>> = ["index.html", "bundle.safetensors.zst", "viewer_bg.wasm"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).expect("read"))
        .collect();
    // A changed experiment, written where files may not exceed 200 KiB
    // (the limit a full disk sets, as EFBIG instead of ENOSPC): the prompts
    // fit, the viewer's 600 KB do not. The shell ignores SIGXFSZ so that the
    // write fails with an error instead of killing the process.
    let changed = dir.join("changed.toml");
    std::fs::write(
        &changed,
        SMALL_EXPERIMENT.replace("max_new_tokens = 4", "max_new_tokens = 5"),
    )
    .expect("write experiment");
    let script = format!(
        "trap '' XFSZ; ulimit -f 200; exec '{}' report -q '{}' --out '{out_arg}'",
        env!("CARGO_BIN_EXE_engine"),
        changed.display()
    );
    let full = Command::new("bash")
        .args(["-c", &script])
        .env("SOURCE_DATE_EPOCH", DATE)
        .output()
        .expect("run the engine under a file-size limit");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write `"), "{stderr}");
    assert!(stderr.contains("the disk is full"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // The previous report is whole: not one file of it was replaced.
    for (f, old) in ["index.html", "bundle.safetensors.zst", "viewer_bg.wasm"]
        .iter()
        .zip(&before)
    {
        assert!(
            &std::fs::read(out.join(f)).expect("read") == old,
            "{f} changed"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".engine-report.lock")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    // With room again, the run completes from the prompts it captured.
    let done = ok(&engine(&[
        "report",
        &changed.to_string_lossy(),
        "--out",
        out_arg,
    ]));
    assert!(done.contains("16 from the cache"), "{done}");
    assert!(std::fs::read(out.join("bundle.safetensors.zst")).expect("read") != before[1]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_file_replaced_during_a_run_stops_it_and_keeps_what_was_captured() {
    let dir = scratch("model-changed");
    let model = dir.join("model.gguf");
    let original = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&original, &model).expect("copy the model");
    let out = dir.join("reports").join("small");
    let experiment = experiment_file(&dir);
    let child = start_report(
        &[&experiment, "--model", model.to_str().expect("utf-8")],
        &out,
        3,
    );
    // Replace the file as a download or a move would: a new file (same
    // length, other content and time) renamed over the old one.
    let mut bytes = std::fs::read(&model).expect("read model");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let replacement = dir.join("replacement.gguf");
    std::fs::write(&replacement, &bytes).expect("write the replacement");
    std::fs::rename(&replacement, &model).expect("replace the model");
    let stopped = child.wait_with_output().expect("wait for the engine");
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("changed during the run"), "{stderr}");
    assert!(
        !out.join("index.html").exists(),
        "no report from a mixed run"
    );
    let kept = cached_prompts(&out);
    assert!(kept >= 3, "{kept} prompts kept");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The small experiment with patching at two layers: the patched runs need
/// every target's states, so they run where the shards are merged.
const PATCHING: &str = "\n[patching]\nenabled = true\nlayers = [14, 29]\n";

#[test]
fn patched_shards_merge_into_the_single_machine_report() {
    let dir = scratch("patched-shards");
    let path = dir.join("patched.toml");
    std::fs::write(&path, format!("{SMALL_EXPERIMENT}{PATCHING}")).expect("write experiment");
    let experiment = path.to_str().expect("utf-8");
    let single = dir.join("single");
    ok(&engine(&[
        "report",
        "-q",
        experiment,
        "--out",
        single.to_str().expect("utf-8"),
    ]));
    let mut shard_files = Vec::new();
    for i in 1..=2 {
        let out = dir.join(format!("machine-{i}"));
        ok(&engine(&[
            "report",
            "-q",
            experiment,
            "--shard",
            &format!("{i}/2"),
            "--out",
            out.to_str().expect("utf-8"),
        ]));
        shard_files.push(
            out.join("shards")
                .join(format!("shard-{i}-of-2.zip"))
                .to_str()
                .expect("utf-8")
                .to_string(),
        );
    }
    let merged = dir.join("merged");
    let mut args = vec!["merge", "-q"];
    args.extend(shard_files.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().expect("utf-8")]);
    ok(&engine(&args));
    same_report(&single, &merged);
    for file in ["data/patching.csv", "data/patching_recovery.csv"] {
        let a = std::fs::read(single.join(file)).expect("read");
        let b = std::fs::read(merged.join(file)).expect("read");
        assert!(a == b, "{file} differs after the merge");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The small experiment with three targets per condition (so that a target
/// has three distinct sets of two demonstrations) and `robustness`.
fn draws_experiment(dir: &Path, robustness: &str) -> String {
    let text = SMALL_EXPERIMENT
        .replace("instances_per_condition = 2", "instances_per_condition = 3")
        + "\n[robustness]\n"
        + robustness
        + "\n";
    let path = dir.join(format!("{}.toml", robustness.replace([' ', '=', '\n'], "")));
    std::fs::write(&path, text).expect("write experiment");
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn three_draws_resume_and_shard_to_the_same_bytes_and_add_only_their_prompts() {
    let dir = scratch("draws");
    let three = draws_experiment(&dir, "draws = 3");
    // Uninterrupted: 12 targets, each 0-shot once and k-shot in 3 draws.
    let whole = dir.join("whole");
    ok(&engine(&[
        "report",
        "-q",
        &three,
        "--out",
        whole.to_str().expect("utf-8"),
    ]));
    // 48 prompts (two 0-shot prompts of identical text share a record).
    let prompts = std::fs::read_to_string(whole.join("data/prompts.csv")).expect("read");
    assert!(prompts.lines().next().is_some_and(|h| h.ends_with(",draw")));
    for table in ["robustness", "robustness_draws"] {
        assert!(
            whole.join("data").join(format!("{table}.csv")).is_file(),
            "{table}.csv"
        );
    }
    let html = std::fs::read_to_string(whole.join("index.html")).expect("read");
    assert!(
        html.contains("keep their sign in all 3 draws"),
        "robustness table"
    );

    // One draw first, then three: only the new draws' prompts are captured,
    // and the report is the uninterrupted one.
    let grown = dir.join("grown");
    let one = draws_experiment(&dir, "draws = 1");
    ok(&engine(&[
        "report",
        "-q",
        &one,
        "--out",
        grown.to_str().expect("utf-8"),
    ]));
    let text = ok(&engine(&[
        "report",
        &three,
        "--out",
        grown.to_str().expect("utf-8"),
    ]));
    assert!(text.contains("24 from the cache"), "{text}");
    same_report(&whole, &grown);

    // Two shards, merged.
    let mut shard_files = Vec::new();
    for i in 1..=2 {
        let out = dir.join(format!("machine-{i}"));
        ok(&engine(&[
            "report",
            "-q",
            &three,
            "--shard",
            &format!("{i}/2"),
            "--out",
            out.to_str().expect("utf-8"),
        ]));
        let file = out.join("shards").join(format!("shard-{i}-of-2.zip"));
        shard_files.push(file.to_str().expect("utf-8").to_string());
    }
    let merged = dir.join("merged");
    let mut args = vec!["merge", "-q"];
    args.extend(shard_files.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().expect("utf-8")]);
    ok(&engine(&args));
    same_report(&whole, &merged);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn patching_runs_in_every_draw_and_its_recovery_is_a_finding() {
    let dir = scratch("patched-draws");
    let experiment = draws_experiment(&dir, "draws = 2");
    let text = std::fs::read_to_string(&experiment).expect("read")
        + "\n[patching]\nenabled = true\nlayers = [29]\n";
    std::fs::write(&experiment, text).expect("write experiment");
    let out = dir.join("report");
    let log = ok(&engine(&[
        "report",
        &experiment,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        log.contains("(draw 2 of 2)"),
        "the second draw is patched:\n{log}"
    );
    let rows = |file: &str| -> Vec<csv::StringRecord> {
        let text = std::fs::read_to_string(out.join("data").join(file)).expect("read table");
        csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|r| r.expect("row"))
            .collect()
    };
    let finding = "patching recovery: replace (answer log-probability)";
    let spread: Vec<_> = rows("robustness.csv")
        .into_iter()
        .filter(|r| &r[2] == finding)
        .collect();
    assert_eq!(spread.len(), 2, "one row per task at block 29: {spread:?}");
    assert!(spread
        .iter()
        .all(|r| &r[3] == "29" && &r[4] == "2" && &r[13] == "true"));
    // The first draw's value is the patching table's; the second draw's is
    // its own (other k-shot states patched in).
    let recovery = rows("patching_recovery.csv");
    let per_draw = rows("robustness_draws.csv");
    for task in ["linear-regression", "reading-comprehension"] {
        let value = |draw: &str| -> f64 {
            per_draw
                .iter()
                .find(|r| &r[1] == task && &r[2] == finding && &r[3] == "29" && &r[4] == draw)
                .unwrap_or_else(|| panic!("{task}: no draw {draw}"))[5]
                .parse()
                .expect("number")
        };
        let table: f64 = recovery
            .iter()
            .find(|r| {
                &r[1] == task && &r[2] == "replace" && &r[3] == "answer_logprob" && &r[4] == "29"
            })
            .unwrap_or_else(|| panic!("{task}: no recovery row"))[6]
            .parse()
            .expect("number");
        assert_eq!(value("0").to_bits(), table.to_bits(), "{task}");
        assert_ne!(
            value("1").to_bits(),
            table.to_bits(),
            "{task}: the second draw patched its own states"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_draw_written_out_is_the_report_without_a_robustness_section() {
    // The reference's cache serves every prompt: the keys are the same.
    // (The copy of its folder forgets the reference's inputs, so that the
    // analyses run again rather than reuse its results.)
    let dir = scratch("one-draw");
    let out = dir.join("small");
    copy_dir(reference(), &out);
    std::fs::remove_file(out.join("cache").join("inputs.sha256")).expect("remove");
    let path = dir.join("one.toml");
    std::fs::write(
        &path,
        SMALL_EXPERIMENT.to_string() + "\n[robustness]\ndraws = 1\norders = 1\n",
    )
    .expect("write");
    let text = ok(&engine(&[
        "report",
        path.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        text.contains("(0 captured now, 16 from the cache)"),
        "{text}"
    );
    same_report(reference(), &out);
    for table in ["behavior", "probe", "correlation", "attention_ratio"] {
        let file = format!("data/{table}.csv");
        assert_eq!(
            std::fs::read(reference().join(&file)).expect("read"),
            std::fs::read(out.join(&file)).expect("read"),
            "{file}"
        );
    }
    assert!(!out.join("data/robustness.csv").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
