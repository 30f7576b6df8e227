//! `engine report --check-rounding` on the default model: it reruns a
//! sample of the prompts with flash attention the other way, writes what
//! changed to data/rounding_check.csv and one line to the output, and
//! leaves every other table of the report byte for byte as without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One task with attention spans (so attention is compared too), two
/// conditions of two instances, 0 and 2 shots: 8 prompts in answer
/// batches of 2.
const TINY_EXPERIMENT: &str = r#"
name = "tiny"
[capture]
max_new_tokens = 3
answer_batch = 2
[analysis]
permutations = 20
bootstrap = 20
cv_folds = 2

[[tasks]]
kind = "reading-comprehension"
shots = 2
instances_per_condition = 2
names = ["Hannah", "Max", "Olivia"]
activities = [
  { phrase = "reading a book", keywords = ["read", "book"] },
  { phrase = "cooking dinner", keywords = ["cook", "dinner"] },
]
"#;

/// Rounding moves a pooled hidden state by a small fraction of its size:
/// at most 3.7 % (relative to the layer's largest value) on 24 prompts of
/// the `paper` preset, SmolLM2 Q4_1 on the CPU, flash attention off instead
/// of auto; a change as large as the state itself would be another
/// computation, not another rounding.
const ROUNDING_IS_SMALL: f64 = 0.5;

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .output()
        .expect("run the engine binary")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-rounding-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn csv_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_rounding_check_reruns_a_sample_and_changes_no_other_table() {
    let dir = scratch("check");
    let experiment = dir.join("tiny.toml");
    std::fs::write(&experiment, TINY_EXPERIMENT).expect("write experiment");
    let experiment = experiment.to_str().expect("utf-8");
    let plain = dir.join("plain");
    ok(&engine(&[
        "report",
        "-q",
        experiment,
        "--out",
        plain.to_str().expect("utf-8"),
    ]));
    // The same report with its capture cache, its analyses forgotten: the
    // checked run reads every prompt from the cache, loads the model for
    // the check alone, and analyses afresh.
    let checked = dir.join("checked");
    copy_dir(&plain, &checked);
    std::fs::remove_file(checked.join("cache").join("inputs.sha256")).expect("forget analyses");
    let stdout = ok(&engine(&[
        "report",
        experiment,
        "--out",
        checked.to_str().expect("utf-8"),
        "--check-rounding",
        "--check-rounding-prompts",
        "2",
    ]));
    let line = stdout
        .lines()
        .find(|l| l.contains("rounding check"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(
        line.starts_with(
            "SmolLM2-135M-Instruct.Q4_1: rounding check (flash attention off instead of auto, 2 prompts): "
        ) && line.contains(" of 2 changed")
            && line.contains("largest change of a pooled hidden state")
            && line.contains("of an attention mass"),
        "{line}"
    );

    let table = std::fs::read_to_string(checked.join("data/rounding_check.csv"))
        .expect("rounding_check.csv written");
    let mut reader = csv::Reader::from_reader(table.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(
        header,
        [
            "model",
            "prompt_id",
            "task",
            "shots",
            "answer",
            "answer_other",
            "changed",
            "score_changed",
            "min_gap",
            "embedding_change",
            "embedding_change_abs",
            "attention_change",
            "attention_change_abs"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2, "one answer batch of 2 prompts:\n{table}");
    assert_ne!(rows[0][1], rows[1][1], "two different prompts");
    for row in &rows {
        assert_eq!(&row[0], "SmolLM2-135M-Instruct.Q4_1");
        assert!(row[1].parse::<usize>().expect("prompt id") < 8);
        assert_eq!(&row[2], "reading-comprehension");
        assert_eq!(
            &row[6] == "1",
            row[4] != row[5],
            "changed means another answer"
        );
        let embedding: f64 = row[9].parse().expect("embedding change");
        let attention: f64 = row[11].parse().expect("attention compared");
        assert!(
            (0.0..ROUNDING_IS_SMALL).contains(&embedding) && (0.0..=1.0).contains(&attention),
            "{row:?}"
        );
    }

    // Every other table is the one the run without the check wrote.
    let plain_tables = csv_files(&plain.join("data"));
    let mut checked_tables = csv_files(&checked.join("data"));
    checked_tables.retain(|n| n != "rounding_check.csv");
    assert_eq!(plain_tables, checked_tables);
    assert!(!plain_tables.is_empty());
    for name in &plain_tables {
        let a = std::fs::read(plain.join("data").join(name)).expect("read");
        let b = std::fs::read(checked.join("data").join(name)).expect("read");
        assert!(a == b, "data/{name} differs with --check-rounding");
    }
    // And so are the bundle's arrays: the check is in no analysed number;
    // only the manifest gains what it found.
    let bundle = |d: &Path| {
        let bytes = std::fs::read(d.join("bundle.safetensors.zst")).expect("bundle");
        viewer::bundle::Bundle::decode(&bytes).expect("decode")
    };
    let (without, with) = (bundle(&plain), bundle(&checked));
    // Bit for bit: the bundle writes NaN where a number has no value (a
    // correlation of answers that never vary, say), and NaN != NaN.
    let bits = |b: &viewer::bundle::Bundle| {
        b.tensors
            .iter()
            .map(|(name, t)| {
                let data: Vec<u32> = t.data.iter().map(|x| x.to_bits()).collect();
                (name.clone(), t.shape.clone(), data)
            })
            .collect::<Vec<_>>()
    };
    let (without_bits, with_bits) = (bits(&without), bits(&with));
    assert_eq!(
        without_bits.iter().map(|t| &t.0).collect::<Vec<_>>(),
        with_bits.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "the bundle's array names differ with --check-rounding"
    );
    for (a, b) in without_bits.iter().zip(&with_bits) {
        assert!(
            a == b,
            "the bundle's array `{}` differs with --check-rounding",
            a.0
        );
    }
    assert!(without.manifest.models[0].rounding_check.is_none());
    let found = with.manifest.models[0]
        .rounding_check
        .as_ref()
        .expect("the check in the manifest");
    assert!(found.prompts > 0, "{found:?}");
    let page = std::fs::read_to_string(checked.join("index.html")).expect("page");
    assert!(
        page.contains("Measured in this run"),
        "the report states the figure"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny random-weight model of `gemma` (the first Gemma), whose
/// attention the engine reads from llama.cpp's probabilities
/// (scripts/tiny_arch_gguf.py, as tests/models.rs makes it).
fn tiny_gemma(dir: &Path) -> PathBuf {
    let out = dir.join("gemma.gguf");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tokenizer = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    let result = Command::new("python3")
        .arg(repo.join("scripts/tiny_arch_gguf.py"))
        .arg("gemma")
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run python3");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

#[test]
fn a_model_read_through_llamas_probabilities_is_checked_with_flash_attention_on_without_attention()
{
    let dir = scratch("materialized");
    let experiment = dir.join("tiny.toml");
    std::fs::write(&experiment, TINY_EXPERIMENT).expect("write experiment");
    let gemma = tiny_gemma(&dir);
    let out = dir.join("report");
    let stdout = ok(&engine(&[
        "report",
        experiment.to_str().expect("utf-8"),
        "--model",
        gemma.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--check-rounding",
        "--check-rounding-prompts",
        "1",
    ]));
    assert!(
        stdout.contains("gemma: rounding check (flash attention on instead of off, 2 prompts): ")
            && stdout.contains("attention not compared (llama.cpp's own probabilities"),
        "{stdout}"
    );
    let table = std::fs::read_to_string(out.join("data/rounding_check.csv")).expect("table");
    let mut reader = csv::Reader::from_reader(table.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2, "one whole answer batch:\n{table}");
    for row in &rows {
        assert!(!row[9].is_empty(), "hidden states compared: {row:?}");
        assert!(
            row[11].is_empty() && row[12].is_empty(),
            "attention not: {row:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_check_of_no_prompts_is_refused_before_any_work() {
    let dir = scratch("zero");
    let out = engine(&[
        "report",
        "--out",
        dir.join("report").to_str().expect("utf-8"),
        "--check-rounding",
        "--check-rounding-prompts",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--check-rounding-prompts 0 reruns no prompt"),
        "{stderr}"
    );
    assert!(!dir.join("report").exists(), "nothing written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_prompt_count_without_the_check_is_refused() {
    let out = engine(&["report", "--check-rounding-prompts", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--check-rounding"), "{stderr}");
}
