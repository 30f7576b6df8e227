//! What a report run records beyond the bundle (`run.json`: where the
//! models were, the hardware, how long each stage took, the command line,
//! and the files it wrote, which alone a later run may replace or remove),
//! and `engine report --reproduce DIR`, which re-runs a report from its
//! bundle's manifest and that record.
//!
//! Durations and hardware live here and not in the bundle's manifest, so
//! that the bundle stays byte-identical between runs of the same inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::folder::Files;
use super::Plan;
use crate::cli::{BadInput, ReportArgs};
use crate::commands::say;
use crate::study::ModelRun;

pub(crate) const RUN_FILE: &str = "run.json";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModelPlace {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// How its attention was read, and why (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
}

/// The record of one run, written to `run.json` beside the bundle.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub engine_version: String,
    pub engine_revision: Option<String>,
    pub command: Vec<String>,
    /// Seconds since 1970 when the run started.
    pub started: u64,
    pub hardware: BTreeMap<String, String>,
    pub models: Vec<ModelPlace>,
    /// Stage → seconds.
    pub durations: BTreeMap<String, f64>,
    /// Every file of the report this run wrote (path below the report
    /// folder → SHA-256): the only files a later run may replace or remove
    /// (see folder.rs). Absent from the record of an engine that did not
    /// list them.
    #[serde(default)]
    pub files: Option<Files>,
    /// While a run moves its files into place: the files of the run before
    /// that are still in the folder, so that an interrupted move knows both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<Files>,
}

impl RunRecord {
    pub(crate) fn start() -> RunRecord {
        RunRecord {
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            engine_revision: option_env!("ENGINE_GIT_REVISION").map(str::to_string),
            command: std::env::args().collect(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hardware: hardware(),
            models: Vec::new(),
            durations: BTreeMap::new(),
            files: Some(Files::new()),
            superseded: None,
        }
    }

    /// The record in the report folder `dir`, if it holds one the engine wrote.
    pub(crate) fn read(dir: &Path) -> Option<RunRecord> {
        let text = std::fs::read_to_string(dir.join(RUN_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub(crate) fn capture(&mut self, run: &ModelRun) {
        let path = std::fs::canonicalize(&run.info.path).unwrap_or_else(|_| run.info.path.clone());
        self.models.push(ModelPlace {
            name: run.name.clone(),
            path,
            sha256: run.sha256.clone(),
            attention: Some(run.attention.reason.clone()),
        });
        self.durations
            .insert(format!("capture {}", run.name), run.capture_seconds);
    }

    pub(crate) fn shard_capture(&mut self, name: &str, captured: usize, owned: usize) {
        self.durations.insert(
            format!("shard capture {name} ({captured} of {owned} prompts new)"),
            0.0,
        );
    }

    pub(crate) fn stage(&mut self, name: &str, seconds: f64) {
        self.durations.insert(name.to_string(), seconds);
    }

    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let path = dir.join(RUN_FILE);
        Ok(crate::atomic::write_atomically(&path, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })?)
    }
}

/// CPU model, cores, memory and OS, as far as the system says.
fn hardware() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(name) = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
        {
            out.insert("cpu".to_string(), name.1.trim().to_string());
        }
    }
    if let Ok(n) = std::thread::available_parallelism() {
        out.insert("cores".to_string(), n.to_string());
    }
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(total) = meminfo.lines().find(|l| l.starts_with("MemTotal")) {
            out.insert(
                "memory".to_string(),
                total.trim_start_matches("MemTotal:").trim().to_string(),
            );
        }
    }
    out.insert(
        "os".to_string(),
        format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    );
    out.insert(
        "gpu_offload".to_string(),
        crate::capture::supports_gpu_offload().to_string(),
    );
    out
}

/// The plan of a reproduction: the recorded experiment, the recorded models
/// (found where they were, or given with --model, or the default model),
/// each checked by SHA-256.
pub(crate) fn plan_reproduction(dir: &Path, args: &ReportArgs) -> anyhow::Result<Plan> {
    let bundle = crate::report::read_bundle(&dir.join(viewer::bundle::FILE_NAME))?;
    let manifest = &bundle.manifest;
    let experiment = super::experiment_from_json(
        &manifest.experiment,
        &format!("the manifest of `{}`", dir.display()),
    )?;
    let record = RunRecord::read(dir);
    if !args.models.is_empty() && args.models.len() != manifest.models.len() {
        return Err(BadInput(format!(
            "the report was made with {} models; give one --model per model, in order",
            manifest.models.len()
        ))
        .into());
    }
    let cache_root = crate::study::runner::cache_root(dir);
    let mut models = Vec::new();
    for (m, entry) in manifest.models.iter().enumerate() {
        let candidates: Vec<PathBuf> = match args.models.get(m) {
            Some(path) => vec![path.clone()],
            None => record
                .iter()
                .flat_map(|r| &r.models)
                .filter(|p| p.name == entry.name)
                .map(|p| p.path.clone())
                .chain(crate::default_model::resolve(None).ok())
                .collect(),
        };
        let mut found = None;
        for path in &candidates {
            if !path.is_file() {
                continue;
            }
            let sha = crate::study::runner::model_fingerprint(path, &cache_root)?;
            if sha == entry.sha256 {
                found = Some(path.clone());
                break;
            }
            if args.models.get(m).is_some() {
                return Err(BadInput(format!(
                    "`{}` is not the model this report was made with: its SHA-256 is {sha}, the report's `{}` has {}",
                    path.display(),
                    entry.name,
                    entry.sha256
                ))
                .into());
            }
        }
        let path = found.ok_or_else(|| {
            BadInput(format!(
                "cannot find the model `{}` ({}, SHA-256 {}) this report was made with; pass it with --model",
                entry.name, entry.file_name, entry.sha256
            ))
        })?;
        models.push(path);
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".to_string());
        dir.with_file_name(format!("{name}-reproduced"))
    });
    Ok(Plan {
        known_sha256: vec![None; models.len()],
        experiment,
        models,
        out,
        created: Some(manifest.created.clone()),
    })
}

/// Says whether a reproduction's bundle equals the original's, and if not,
/// which arrays differ and by how much.
pub(crate) fn compare_bundles(
    original: &Path,
    reproduced: &Path,
    quiet: bool,
) -> anyhow::Result<()> {
    let name = viewer::bundle::FILE_NAME;
    let a = std::fs::read(original.join(name))?;
    let b = std::fs::read(reproduced.join(name))?;
    if quiet {
        return Ok(());
    }
    if a == b {
        say!(
            "reproduced: the bundle is byte-identical to `{}`",
            original.join(name).display()
        )?;
        return Ok(());
    }
    let (a, b) = (
        viewer::bundle::Bundle::decode(&a)?,
        viewer::bundle::Bundle::decode(&b)?,
    );
    say!(
        "reproduced, with differences from `{}`:",
        original.display()
    )?;
    if a.manifest != b.manifest {
        say!("  the manifest differs (engine version, llama.cpp build or options)")?;
    }
    for (key, x) in &a.tensors {
        match b.tensors.get(key) {
            None => say!("  {key}: missing")?,
            Some(y) if x.shape != y.shape => say!("  {key}: shape {:?} vs {:?}", x.shape, y.shape)?,
            Some(y) => {
                let max = x
                    .data
                    .iter()
                    .zip(&y.data)
                    .map(|(p, q)| f64::from((p - q).abs()))
                    .filter(|d| d.is_finite())
                    .fold(0.0f64, f64::max);
                if x.data
                    .iter()
                    .zip(&y.data)
                    .any(|(p, q)| p.to_bits() != q.to_bits())
                {
                    say!("  {key}: max |Δ| = {max:.3e}")?;
                }
            }
        }
    }
    Ok(())
}
