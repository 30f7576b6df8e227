//! Capturing an experiment on one model through the cache: prompts already
//! captured are read back, the rest are captured and saved one by one, so a
//! run can stop at any prompt and resume there. A shard captures only its
//! share of the prompts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;

use super::cache::{CaptureSettings, PromptCache};
use super::capture::{answer_batches, answer_context, capture_batch, tokenize_all};
use super::rounding::RoundingCheck;
use super::ModelRun;
use crate::capture::{ContextOptions, Model, ModelOptions, Session};
use crate::experiment::Experiment;
use crate::progress::{Mode, Progress};

/// Set by Ctrl-C: the capture loop stops after the prompt in flight.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The run stopped on request; everything captured so far is saved.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: {done} of {total} prompts of `{model}` are captured and saved; run the same command again to resume"
)]
pub struct Interrupted {
    pub model: String,
    pub done: usize,
    pub total: usize,
}

/// The model file changed under a running capture.
#[derive(Debug, thiserror::Error)]
#[error("the model file `{0}` changed during the run; the prompts captured before the change are kept under the old file's fingerprint — run again to capture with the new file")]
pub struct ModelChanged(pub String);

/// Which share of the prompts a machine captures: `index` of `count`
/// (1-based, as Slurm's array task ids usually are). Shards own whole
/// answer batches, so that every prompt is answered beside the same
/// prompts as on a single machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Answer batches are dealt round-robin, so every shard gets a similar
    /// mix of short 0-shot and long k-shot prompts.
    pub fn owns(&self, batch: usize) -> bool {
        batch % self.count == self.index - 1
    }
}

/// One model's capture job.
#[derive(Debug)]
pub struct CaptureJob<'a> {
    pub experiment: &'a Experiment,
    pub model_path: &'a Path,
    /// A unique short name for the report.
    pub name: String,
    pub n_gpu_layers: i32,
    pub context: ContextOptions,
    pub cache_root: &'a Path,
    pub shard: Option<Shard>,
    pub progress: Mode,
    /// The model file's SHA-256 when already known (merging shards, where
    /// the file itself may be elsewhere).
    pub known_sha256: Option<String>,
    /// Rerun at least this many prompts with the other flash-attention
    /// setting once the capture is complete (`--check-rounding`, see
    /// [`super::rounding`]); never in a shard.
    pub check_rounding: Option<usize>,
}

/// What a job produced: the whole run, or (for a shard) how many prompts
/// it captured.
#[derive(Debug)]
pub enum CaptureOutcome {
    Complete {
        run: Box<ModelRun>,
        /// What `--check-rounding` found (`None` without it).
        rounding: Option<RoundingCheck>,
    },
    Shard {
        cache: PromptCache,
        captured: usize,
        owned: usize,
        sha256: String,
    },
}

/// `(length, modification time)`: enough to notice a replaced model file.
fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// The model file's SHA-256, remembered per (path, length, modification
/// time) under `cache_root`, so that a 40 GB model is hashed once.
pub fn model_fingerprint(path: &Path, cache_root: &Path) -> anyhow::Result<String> {
    let stamp = file_stamp(path).ok_or_else(|| {
        crate::errors::BadInput(format!(
            "cannot read the model `{}` — check the path given with --model",
            path.display()
        ))
    })?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let since_epoch = stamp
        .1
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let memo_key = format!("{}\t{}\t{}", canonical.display(), stamp.0, since_epoch);
    let memo_path = cache_root.join("fingerprints.tsv");
    let memo = std::fs::read_to_string(&memo_path).unwrap_or_default();
    for line in memo.lines() {
        if let Some((key, sha)) = line.rsplit_once('\t') {
            if key == memo_key {
                return Ok(sha.to_string());
            }
        }
    }
    let sha = crate::fingerprint::file_sha256(path)?;
    std::fs::create_dir_all(cache_root)
        .with_context(|| format!("cannot create `{}`", cache_root.display()))?;
    let updated = format!("{memo}{memo_key}\t{sha}\n");
    crate::atomic::write_atomically(&memo_path, |w| {
        std::io::Write::write_all(w, updated.as_bytes())
    })?;
    Ok(sha)
}

/// Runs `job`: reads what the cache has, captures the rest.
pub fn capture_model(job: &CaptureJob<'_>) -> anyhow::Result<CaptureOutcome> {
    let experiment = job.experiment;
    let started = Instant::now();
    let sha256 = match &job.known_sha256 {
        Some(sha) => sha.clone(),
        None => model_fingerprint(job.model_path, job.cache_root)?,
    };
    let stamp = file_stamp(job.model_path);
    let cache = PromptCache::open(job.cache_root, &sha256)?;
    let mut model: Option<Model> = None;
    // A cached description serves while the file is unchanged, or absent
    // (merging shards on a machine without the model).
    let cached = cache
        .model_info()
        .filter(|i| stamp.is_none_or(|s| s.0 == i.file_len));
    let info = match cached {
        Some(mut info) => {
            info.path = job.model_path.to_path_buf();
            info
        }
        None => {
            let loaded = Model::load(&ModelOptions {
                path: job.model_path.to_path_buf(),
                n_gpu_layers: job.n_gpu_layers,
            })?;
            let info = loaded.info().clone();
            cache.put_model_info(&info)?;
            model = Some(loaded);
            info
        }
    };
    // The attention path is decided here, from the architecture, before
    // any prompt runs: a refused `--flash-attn on` costs no capture.
    let plan = info.plan_attention(job.context.flash_attention)?;
    let mut context = job.context.clone();
    context.flash_attention = plan.flash_attention;
    context.attention_path = Some(plan.path);
    let settings = CaptureSettings {
        flash_attention: format!("{:?}", context.flash_attention).to_lowercase(),
        n_gpu_layers: job.n_gpu_layers,
    };
    // The prompts as this model sees them (chat-rendered, or as written).
    let (model_experiment, chat) =
        super::prompting::prompts_for_model(experiment, &job.name, &info)?;
    let experiment: &Experiment = &model_experiment;
    let all_batches = answer_batches(experiment);
    let batches: Vec<&Vec<usize>> = all_batches
        .iter()
        .enumerate()
        .filter(|(b, _)| job.shard.is_none_or(|s| s.owns(*b)))
        .map(|(_, batch)| batch)
        .collect();
    let owned: Vec<usize> = batches.iter().copied().flatten().copied().collect();
    let layers = experiment.layers(info.n_layer)?;
    if experiment.file.patching.enabled {
        // Checked before any capture, like `capture.layers`.
        experiment.patching_layers(info.n_layer)?;
    }
    let mut keys = vec![String::new(); experiment.prompts.len()];
    for batch in &all_batches {
        for &p in batch {
            keys[p] = cache.key(experiment, p, batch, &layers, &settings);
        }
    }
    let missing: Vec<usize> = owned
        .iter()
        .copied()
        .filter(|&p| !cache.contains(&keys[p]))
        .collect();

    let mut progress = Progress::new(
        job.progress,
        format!("capture {}", job.name),
        "prompts",
        owned.len(),
    );
    progress.skip(owned.len() - missing.len());
    progress.note(&format!("{}: attention {}", job.name, plan.reason));
    if let (Some(shard), true) = (job.shard, owned.is_empty()) {
        progress.note(&format!(
            "{}: shard {} of {} has nothing to capture: the experiment has {} answer batches of up to {} prompts, dealt round-robin to the shards",
            job.name,
            shard.index,
            shard.count,
            all_batches.len(),
            experiment.file.capture.answer_batch
        ));
    }
    if !missing.is_empty() {
        if owned.len() > missing.len() {
            progress.note(&format!(
                "{}: resuming, {} of {} prompts already captured",
                job.name,
                owned.len() - missing.len(),
                owned.len()
            ));
        }
        let loaded = match model.take() {
            Some(m) => m,
            None => Model::load(&ModelOptions {
                path: job.model_path.to_path_buf(),
                n_gpu_layers: job.n_gpu_layers,
            })?,
        };
        let model = &*model.insert(loaded);
        let tokenized = tokenize_all(model, experiment)?;
        let options = super::context_for(experiment, &tokenized, model, context.clone())?;
        let mut session = Session::new(model, options)?;
        session.check_graph()?;
        let mut answers = answer_context(&session, experiment, &tokenized)?;
        let mut done = owned.len() - missing.len();
        // A batch with a missing prompt runs whole, cached prompts too (a run
        // stopped while saving it): its answers depend on all its prompts.
        for &batch in batches
            .iter()
            .filter(|b| b.iter().any(|p| !cache.contains(&keys[*p])))
        {
            if INTERRUPTED.load(Ordering::SeqCst) {
                progress.finish("interrupted");
                return Err(Interrupted {
                    model: job.name.clone(),
                    done,
                    total: owned.len(),
                }
                .into());
            }
            if file_stamp(job.model_path) != stamp {
                return Err(ModelChanged(job.model_path.display().to_string()).into());
            }
            let records = capture_batch(
                &mut session,
                answers.as_mut(),
                experiment,
                &tokenized,
                batch,
                &layers,
            )?;
            for (record, &p) in records.iter().zip(batch) {
                if !cache.contains(&keys[p]) {
                    cache.put(&keys[p], record)?;
                    done += 1;
                    progress.tick();
                }
            }
        }
    }
    let captured = missing.len();
    progress.finish(&format!(
        "{} prompts ({} captured now, {} from the cache) in {}",
        owned.len(),
        captured,
        owned.len() - captured,
        crate::progress::duration(started.elapsed().as_secs_f64())
    ));
    if job.shard.is_some() {
        return Ok(CaptureOutcome::Shard {
            cache,
            captured,
            owned: owned.len(),
            sha256,
        });
    }
    let records = keys
        .iter()
        .enumerate()
        .map(|(p, key)| {
            cache.get(key, experiment, p).ok_or_else(|| {
                anyhow::anyhow!(
                    "prompt {p} is missing from the capture cache `{}` although it was just written",
                    cache.dir().display()
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rounding = match job.check_rounding {
        Some(want) => {
            let loaded = match model.take() {
                Some(m) => m,
                None => load_for_rounding_check(job, stamp)?,
            };
            let check = check_rounding(
                job, experiment, &layers, &context, &plan, &records, &loaded, want,
            )?;
            model = Some(loaded);
            Some(check)
        }
        None => None,
    };
    let patching = if experiment.file.patching.enabled {
        Some(patch_through_cache(
            job, experiment, &context, &records, &info, &cache, &sha256, &settings, model,
        )?)
    } else {
        None
    };
    let run = Box::new(ModelRun {
        name: job.name.clone(),
        info,
        layers,
        records,
        sha256,
        capture_seconds: started.elapsed().as_secs_f64(),
        patching,
        attention: plan,
        chat,
    });
    Ok(CaptureOutcome::Complete { run, rounding })
}

/// The model, loaded for `--check-rounding` after a capture that read
/// every prompt from the cache.
fn load_for_rounding_check(
    job: &CaptureJob<'_>,
    stamp: Option<(u64, SystemTime)>,
) -> anyhow::Result<Model> {
    let now = file_stamp(job.model_path);
    if now.is_none() {
        return Err(crate::errors::BadInput(format!(
            "--check-rounding reruns prompts through the model, but `{}` cannot be read: every prompt of `{}` came from the capture cache, so no prompt can be rerun — put the model file back, or leave out --check-rounding",
            job.model_path.display(),
            job.name
        ))
        .into());
    }
    if now != stamp {
        return Err(ModelChanged(job.model_path.display().to_string()).into());
    }
    Ok(Model::load(&ModelOptions {
        path: job.model_path.to_path_buf(),
        n_gpu_layers: job.n_gpu_layers,
    })?)
}

/// The rounding check of one model ([`super::rounding::rerun`]), with its
/// progress; Ctrl-C stops it like the capture (which is saved whole).
#[allow(clippy::too_many_arguments)]
fn check_rounding(
    job: &CaptureJob<'_>,
    experiment: &Experiment,
    layers: &[usize],
    context: &ContextOptions,
    plan: &crate::capture::AttentionPlan,
    records: &[super::capture::PromptRecord],
    model: &Model,
    want: usize,
) -> anyhow::Result<RoundingCheck> {
    let started = Instant::now();
    let batches = answer_batches(experiment);
    let sample = super::rounding::sample_batches(&batches, want, experiment.file.seed);
    let total: usize = sample.iter().map(|&b| batches[b].len()).sum();
    let setting = super::rounding::other_setting(plan);
    let mut progress = Progress::new(
        job.progress,
        format!("rounding check {} ({})", job.name, setting.description),
        "prompts",
        total,
    );
    let mut after_batch = |done: usize| {
        for _ in 0..done {
            progress.tick();
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return std::ops::ControlFlow::Break(
                Interrupted {
                    model: job.name.clone(),
                    done: records.len(),
                    total: records.len(),
                }
                .into(),
            );
        }
        std::ops::ControlFlow::Continue(())
    };
    let check = super::rounding::rerun(
        model,
        experiment,
        layers,
        context,
        plan,
        records,
        &sample,
        &mut after_batch,
    )?;
    progress.finish(&format!(
        "{} prompts rerun in {}",
        check.prompts,
        crate::progress::duration(started.elapsed().as_secs_f64())
    ));
    Ok(check)
}

/// The patching stage of one model: every run read from the cache, or
/// run now (the model loaded only then). It needs every target's states,
/// so it runs once all prompts are captured, never in a shard.
#[allow(clippy::too_many_arguments)]
fn patch_through_cache(
    job: &CaptureJob<'_>,
    experiment: &Experiment,
    context: &ContextOptions,
    records: &[super::capture::PromptRecord],
    info: &crate::capture::ModelInfo,
    cache: &PromptCache,
    sha256: &str,
    settings: &CaptureSettings,
    model: Option<Model>,
) -> anyhow::Result<super::patching::ModelPatching> {
    use super::patching::{patch_model, PatchCache, PatchingContext};
    let patch_cache = PatchCache {
        cache,
        model_sha256: sha256,
        settings,
    };
    let context = PatchingContext {
        threads: context.threads,
        flash_attention: context.flash_attention,
    };
    let (n_layer, n_embd) = (info.n_layer, info.n_embd);
    let cached = patch_model(
        experiment,
        records,
        n_layer,
        n_embd,
        &patch_cache,
        context,
        None,
        None,
    )?;
    if let Some(done) = cached {
        return Ok(done);
    }
    let model = match model {
        Some(m) => m,
        None => Model::load(&ModelOptions {
            path: job.model_path.to_path_buf(),
            n_gpu_layers: job.n_gpu_layers,
        })?,
    };
    let tokenized = tokenize_all(&model, experiment)?;
    let started = Instant::now();
    // One tick per target (its 0-shot prompt) and demonstration draw.
    let targets = experiment.prompts.iter().filter(|p| p.shots == 0).count()
        * experiment.file.robustness.variants();
    let mut progress = Progress::new(
        job.progress,
        format!("patch {}", job.name),
        "targets",
        targets,
    );
    let done = patch_model(
        experiment,
        records,
        n_layer,
        n_embd,
        &patch_cache,
        context,
        Some((&model, &tokenized)),
        Some(&mut progress),
    )?
    .ok_or_else(|| anyhow::anyhow!("the patching stage asked for the model although it had it"))?;
    progress.finish(&format!(
        "{} patched runs ({} now) in {}",
        done.runs,
        done.runs_now,
        crate::progress::duration(started.elapsed().as_secs_f64())
    ));
    Ok(done)
}

/// Where a report's capture cache lives.
pub fn cache_root(report_dir: &Path) -> PathBuf {
    report_dir.join("cache")
}
