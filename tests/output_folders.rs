//! Whose files are whose: `engine report`, `engine merge` and `engine site`
//! write into folders people choose, and never replace or delete a file the
//! engine did not write. Every case checks the user's files byte for byte
//! afterwards. The refusals come before any model work (they are checked
//! with a model path that does not exist); one test runs the default model
//! on a small experiment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMALL_EXPERIMENT: &str = include_str!("fixtures/small-experiment.toml");
const NO_MODEL: &str = "/no/such/model.gguf";

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .output()
        .expect("run the engine binary")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-folders-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// A refusal: exit code 2 and one `error:` line holding every piece of
/// `expected`; returns the line.
fn refused(out: &Output, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for piece in expected {
        assert!(stderr.contains(piece), "{piece:?} not in: {stderr}");
    }
    stderr
}

/// Every file below `dir` (path below it → bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("list").filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).expect("below root").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes `name` below `dir` with `text`.
fn put(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create");
    std::fs::write(path, text).expect("write");
}

/// A folder of someone else's files, as a person leaves it.
fn their_folder(dir: &Path) {
    put(dir, "notes.txt", "my notes\n");
    put(dir, "index.html", "<!doctype html><title>My page</title>\n");
    put(dir, "figures/plot.svg", "<svg/>\n");
}

#[test]
fn a_folder_of_someone_elses_files_is_refused_and_left_as_it_was() {
    let dir = scratch("theirs");
    let out = dir.join("theirs");
    their_folder(&out);
    let before = files(&dir);
    let line = refused(
        &engine(&["report", "--model", NO_MODEL, "--out", utf8(&out)]),
        &[
            &format!(
                "`{}` already holds files the engine did not write",
                out.display()
            ),
            "figures, index.html, notes.txt",
            "choose another folder with --out, or pass --force",
        ],
    );
    assert!(
        !line.contains("model.gguf"),
        "refused before the model: {line}"
    );
    assert_eq!(files(&dir), before, "nothing changed, nothing added");

    // With --force the report would go beside them, but their index.html
    // is at a path the report needs: refused as well.
    refused(
        &engine(&[
            "report",
            "--model",
            NO_MODEL,
            "--out",
            utf8(&out),
            "--force",
        ]),
        &[
            &format!(
                "`{}` (not written by the engine)",
                out.join("index.html").display()
            ),
            "even with --force",
        ],
    );
    assert_eq!(files(&dir), before, "nothing changed, nothing added");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shard file of one share with no captures, made as `engine report
/// --shard 1/1` would describe its run.
fn empty_shard(path: &Path) {
    use std::io::Write as _;
    let experiment_path = path.with_extension("toml");
    std::fs::write(&experiment_path, SMALL_EXPERIMENT).expect("write");
    let experiment = engine::experiment::Experiment::from_path(&experiment_path)
        .unwrap_or_else(|e| panic!("{e}"));
    let info = serde_json::json!({
        "format": 1,
        "index": 1,
        "count": 1,
        "experiment": serde_json::to_value(&experiment.file).expect("json"),
        "models": [{ "name": "model", "path": NO_MODEL, "sha256": "0".repeat(64) }],
        "flash_attention": "auto",
        "n_gpu_layers": 0,
    });
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).expect("create"));
    zip.start_file("shard.json", zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    zip.write_all(info.to_string().as_bytes()).expect("write");
    zip.finish().expect("zip");
}

#[test]
fn merge_refuses_a_folder_of_someone_elses_files_before_unpacking() {
    let dir = scratch("merge");
    let shard = dir.join("shard-1-of-1.zip");
    empty_shard(&shard);
    let out = dir.join("theirs");
    their_folder(&out);
    let before = files(&dir);
    refused(
        &engine(&["merge", utf8(&shard), "--out", utf8(&out)]),
        &[&format!(
            "`{}` already holds files the engine did not write",
            out.display()
        )],
    );
    refused(
        &engine(&["merge", utf8(&shard), "--out", utf8(&out), "--force"]),
        &[&format!(
            "`{}` (not written by the engine)",
            out.join("index.html").display()
        )],
    );
    assert_eq!(
        files(&dir),
        before,
        "nothing changed, nothing added (no cache)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn out_naming_a_file_is_refused() {
    let dir = scratch("file");
    let file = dir.join("report.txt");
    put(&dir, "report.txt", "mine\n");
    let before = files(&dir);
    refused(
        &engine(&["report", "--model", NO_MODEL, "--out", utf8(&file)]),
        &[&format!("`{}` is a file, not a folder", file.display())],
    );
    assert_eq!(files(&dir), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("read-only");
    let out = dir.join("empty");
    std::fs::create_dir_all(&out).expect("create");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if std::fs::write(out.join("probe"), "").is_ok() {
        // Root writes anywhere: nothing to test here.
        eprintln!("skipping: this user can write into a read-only folder");
    } else {
        refused(
            &engine(&["report", "--model", NO_MODEL, "--out", utf8(&out)]),
            &[
                "cannot write to the report folder",
                "choose another folder with --out",
            ],
        );
        assert!(files(&out).is_empty());
    }
    let _ = std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn site_refuses_an_index_the_engine_did_not_write() {
    let dir = scratch("site");
    put(
        &dir,
        "index.html",
        "<!doctype html><title>Our lab</title>\n",
    );
    let before = files(&dir);
    refused(
        &engine(&["site", utf8(&dir)]),
        &[
            &format!(
                "`{}` is not a site index the engine wrote",
                dir.join("index.html").display()
            ),
            "move it elsewhere",
        ],
    );
    assert_eq!(files(&dir), before);
    // An index the engine wrote is written again.
    std::fs::remove_file(dir.join("index.html")).expect("remove");
    ok(&engine(&["site", "-q", utf8(&dir)]));
    ok(&engine(&["site", "-q", utf8(&dir)]));
    let index = std::fs::read_to_string(dir.join("index.html")).expect("index");
    assert!(index.contains(r#"<meta name="generator" content="engine site index">"#));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A custom site template without the engine's mark still gets it, so the
/// index it made can be written again.
#[test]
fn a_custom_site_template_gets_the_engines_mark() {
    let dir = scratch("template");
    let templates = dir.join("templates");
    put(
        &templates,
        "site.html",
        "<!doctype html><html><head><title>Ours</title></head><body>{{ reports | length }}</body></html>\n",
    );
    let root = dir.join("reports");
    std::fs::create_dir_all(&root).expect("create");
    for _ in 0..2 {
        ok(&engine(&[
            "site",
            "-q",
            utf8(&root),
            "--templates",
            utf8(&templates),
        ]));
    }
    let index = std::fs::read_to_string(root.join("index.html")).expect("index");
    assert!(
        index.starts_with(
            "<!doctype html><html><head>\n<meta name=\"generator\" content=\"engine site index\"><title>Ours</title>"
        ),
        "{index}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The small experiment with its first task only: the second task's
/// figures and tables are no longer part of the report.
fn first_task_only() -> String {
    SMALL_EXPERIMENT
        .split("[[tasks]]\nkind = \"reading-comprehension\"")
        .next()
        .expect("the first task")
        .to_string()
}

/// The report's files as its record lists them.
fn recorded(out: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(out.join("run.json")).expect("run.json");
    let record: serde_json::Value = serde_json::from_str(&text).expect("json");
    serde_json::from_value(record["files"].clone()).expect("a files map")
}

#[test]
fn a_report_writes_beside_other_files_and_removes_only_its_own_stale_ones() {
    let dir = scratch("beside");
    let both = dir.join("small.toml");
    let one = dir.join("one.toml");
    std::fs::write(&both, SMALL_EXPERIMENT).expect("write");
    std::fs::write(&one, first_task_only()).expect("write");
    let root = dir.join("site");
    let out = root.join("mine");
    // A hand-written page where the site index would go, and a folder of
    // the user's files without an index.html of theirs.
    put(
        &root,
        "index.html",
        "<!doctype html><title>Our lab</title>\n",
    );
    put(&out, "notes.txt", "my notes\n");
    put(&out, "figures/plot.svg", "<svg/>\n");
    let theirs = files(&root);

    let text = ok(&engine(&[
        "report",
        utf8(&both),
        "--out",
        utf8(&out),
        "--force",
        "--save-embeddings",
    ]));
    assert!(
        text.contains(&format!(
            "skipped the site index: `{}` is not a site index the engine wrote",
            root.join("index.html").display()
        )),
        "{text}"
    );
    let after = files(&root);
    for (path, bytes) in &theirs {
        assert_eq!(after.get(path), Some(bytes), "{} changed", path.display());
    }
    let first = recorded(&out);
    assert!(first.contains_key("index.html") && first.contains_key("data/behavior.csv"));
    assert!(!first.contains_key("notes.txt") && !first.contains_key("figures/plot.svg"));

    // The user edits one figure of the second task; the second task goes.
    let reading: Vec<&String> = first
        .keys()
        .filter(|k| k.starts_with("figures/") && k.contains("reading-comprehension"))
        .collect();
    assert!(reading.len() >= 2, "{first:?}");
    let edited = reading[0].clone();
    std::fs::write(out.join(&edited), "<svg>my edit</svg>\n").expect("edit");
    // Now the folder is a report: no --force needed.
    let text = ok(&engine(&["report", utf8(&one), "--out", utf8(&out)]));
    assert!(
        text.contains(&format!(
            "kept    {}: the engine wrote it",
            out.join(&edited).display()
        )),
        "{text}"
    );
    for stale in &reading[1..] {
        assert!(!out.join(stale).exists(), "{stale} was not removed");
    }
    assert!(
        !out.join("data/embeddings.safetensors").exists(),
        "the embeddings of the first run"
    );
    assert_eq!(
        std::fs::read_to_string(out.join(&edited)).expect("read"),
        "<svg>my edit</svg>\n"
    );
    let after = files(&root);
    for (path, bytes) in &theirs {
        assert_eq!(after.get(path), Some(bytes), "{} changed", path.display());
    }
    assert!(
        !recorded(&out).contains_key(&edited),
        "the edited figure is the user's now"
    );

    // Both tasks again: the report needs the path of the figure that is
    // the user's now; nothing of the report is replaced.
    let report = files(&out);
    refused(
        &engine(&["report", "-q", utf8(&both), "--out", utf8(&out)]),
        &[&format!(
            "`{}` (not written by the engine)",
            out.join(&edited).display()
        )],
    );
    let after = files(&out);
    for (path, bytes) in &report {
        if !path.starts_with("cache") {
            assert_eq!(after.get(path), Some(bytes), "{} changed", path.display());
        }
    }

    // The report's own page, edited by hand: refused before any model work.
    std::fs::remove_file(out.join(&edited)).expect("remove");
    put(&out, "index.html", "<p>my version</p>\n");
    refused(
        &engine(&[
            "report",
            utf8(&one),
            "--out",
            utf8(&out),
            "--model",
            NO_MODEL,
        ]),
        &[&format!(
            "`{}` (written by the engine, changed since)",
            out.join("index.html").display()
        )],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).expect("read"),
        "<p>my version</p>\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
