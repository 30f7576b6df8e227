//! `engine report`: an experiment on one or more models, from prompts to a
//! published report; `--shard i/N` captures one share of the prompts, and
//! `engine merge` (see [`merge`]) assembles shards into the report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::cli::{BadInput, ReportArgs};
use crate::commands::say;
use crate::experiment::config::ExperimentFile;
use crate::experiment::Experiment;
use crate::progress::{duration, note, Mode};
use crate::report::site::SiteIndex;
use crate::report::{self, Provenance, RenderOptions};
use crate::study::rounding::RoundingCheck;
use crate::study::runner::{self, CaptureJob, CaptureOutcome, Shard};
use crate::study::{self, ModelRun};

mod folder;
mod lock;
pub(crate) mod merge;
mod provenance;

use folder::{committed, Folder, RemoveOnDrop};
pub(crate) use provenance::RunRecord;

/// Everything a report run needs, resolved from the arguments (or from a
/// report being reproduced, or from shards being merged).
#[derive(Debug)]
pub(crate) struct Plan {
    pub experiment: Experiment,
    pub models: Vec<PathBuf>,
    pub out: PathBuf,
    /// Model fingerprints known in advance (merging shards: the model files
    /// need not be on this machine).
    pub known_sha256: Vec<Option<String>>,
    /// The date of the report being reproduced.
    pub created: Option<String>,
}

pub(crate) fn run(args: &ReportArgs, quiet: bool) -> anyhow::Result<()> {
    check_rounding_arguments(args)?;
    let plan = match &args.reproduce {
        Some(dir) => provenance::plan_reproduction(dir, args)?,
        None => plan(args)?,
    };
    let reproduced = args.reproduce.clone();
    publish(&plan, args, quiet)?;
    if let Some(original) = reproduced {
        provenance::compare_bundles(&original, &plan.out, quiet)?;
    }
    Ok(())
}

/// `--check-rounding-prompts 0` asks for a check of nothing.
fn check_rounding_arguments(args: &ReportArgs) -> anyhow::Result<()> {
    if args.check_rounding && args.check_rounding_prompts == 0 {
        return Err(BadInput(format!(
            "--check-rounding-prompts 0 reruns no prompt: give at least 1 (the default is {}), or leave out --check-rounding",
            study::rounding::DEFAULT_PROMPTS
        ))
        .into());
    }
    Ok(())
}

fn plan(args: &ReportArgs) -> anyhow::Result<Plan> {
    let experiment = match (&args.experiment, &args.preset) {
        (Some(path), _) => Experiment::from_path(path)?,
        (None, Some(name)) => Experiment::preset(name)?,
        (None, None) => Experiment::preset("paper")?,
    };
    let models = model_paths(args, &experiment)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&experiment.file.name));
    Ok(Plan {
        known_sha256: vec![None; models.len()],
        experiment,
        models,
        out,
        created: None,
    })
}

/// Runs a plan: capture (through the cache), analyse, publish.
pub(crate) fn publish(plan: &Plan, args: &ReportArgs, quiet: bool) -> anyhow::Result<()> {
    refuse_flash_attention_on(plan, args)?;
    let folder = claim(plan, args)?;
    publish_into(&folder, plan, args, quiet)
}

/// `--flash-attn on` with a model whose architecture the engine reads only
/// through llama.cpp's probabilities: refused from the file's header,
/// before the folder is claimed or any model loads.
fn refuse_flash_attention_on(plan: &Plan, args: &ReportArgs) -> anyhow::Result<()> {
    if args.runtime.flash_attn != crate::capture::FlashAttention::On {
        return Ok(());
    }
    for path in &plan.models {
        if let Some(architecture) = crate::capture::model_architecture(path) {
            crate::capture::plan_attention(&architecture, crate::capture::FlashAttention::On)
                .map_err(crate::capture::CaptureError::from)?;
        }
    }
    Ok(())
}

/// Claims the plan's report folder (see [`folder`]): before any model work,
/// so that a folder the report may not be written into costs nothing.
pub(crate) fn claim(plan: &Plan, args: &ReportArgs) -> anyhow::Result<Folder> {
    let single_file = args.single_file.then(|| {
        format!(
            "{}.html",
            report::render::file_safe(&plan.experiment.file.name)
        )
    });
    Folder::claim(&plan.out, args.force, single_file.as_deref())
}

/// [`publish`] into a folder already claimed.
pub(crate) fn publish_into(
    folder: &Folder,
    plan: &Plan,
    args: &ReportArgs,
    quiet: bool,
) -> anyhow::Result<()> {
    let mode = Mode::detect(quiet);
    let experiment = &plan.experiment;
    let out = &plan.out;
    install_interrupt_handler();
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let cache_root = runner::cache_root(out);
    let mut record = RunRecord::start();

    let mut runs: Vec<ModelRun> = Vec::new();
    // What `--check-rounding` found, per model (by its name in the
    // report), in the order of the models.
    let mut rounding_checks: Vec<(String, RoundingCheck)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut shard_caches = Vec::new();
    for (m, path) in plan.models.iter().enumerate() {
        let name = unique_name(&names, path);
        names.push(name.clone());
        let job = CaptureJob {
            experiment,
            model_path: path,
            name: name.clone(),
            n_gpu_layers: args.runtime.n_gpu_layers,
            context: args.runtime.context_options(),
            cache_root: &cache_root,
            shard,
            progress: mode,
            known_sha256: plan.known_sha256.get(m).cloned().flatten(),
            check_rounding: args.check_rounding.then_some(args.check_rounding_prompts),
        };
        match runner::capture_model(&job)? {
            CaptureOutcome::Complete { run, rounding } => {
                record.capture(&run);
                if let Some(check) = rounding {
                    rounding_checks.push((name.clone(), check));
                }
                runs.push(*run);
            }
            CaptureOutcome::Shard {
                cache,
                captured,
                owned,
                sha256,
            } => {
                record.shard_capture(&name, captured, owned);
                shard_caches.push((name, path.clone(), sha256, cache));
            }
        }
    }
    if let Some(shard) = shard {
        let file = merge::write_shard(out, experiment, shard, &shard_caches, &args.runtime)?;
        if !quiet {
            say!(
                "wrote   {} (shard {} of {}); assemble the report with `engine merge {}/shards/*.zip --out {}`",
                file.display(),
                shard.index,
                shard.count,
                out.display(),
                out.display()
            )?;
        }
        return Ok(());
    }

    let data_dir = out.join("data");
    let bundle_path = out.join(viewer::bundle::FILE_NAME);
    // Every file of this run is written into a staging folder first and
    // moved into the report only once all are written: a full disk or a
    // crash on the way leaves the previous report whole, never half new.
    let staging = folder.staging()?;
    // Removes what a failed run staged (the disk may be full); after the
    // commit there is nothing left to remove.
    let _cleanup = RemoveOnDrop(&staging);
    let staged_bundle = staging.join(viewer::bundle::FILE_NAME);
    // Nothing changed since the last complete run (same engine, experiment
    // and captured records, and its results as the engine wrote them):
    // reuse its bundle and tables, re-render only.
    let digest = inputs_digest(experiment, &runs, args.check_rounding);
    let digest_path = runner::cache_root(out).join("inputs.sha256");
    let unchanged = std::fs::read_to_string(&digest_path).ok().as_deref() == Some(digest.as_str())
        && folder.holds_own(viewer::bundle::FILE_NAME)
        && folder.holds_own("data/rsa_alignment.csv")
        && (!args.save_embeddings || folder.holds_own("data/embeddings.safetensors"));
    let (bundle, results) = if unchanged {
        if mode != Mode::Quiet {
            note!("analyses: nothing changed since the last run; reusing its results");
        }
        if args.single_file {
            // The single file inlines the bundle file's bytes.
            std::fs::copy(&bundle_path, &staged_bundle)
                .with_context(|| format!("cannot copy `{}`", bundle_path.display()))?;
        }
        (report::read_bundle(&bundle_path)?, None)
    } else {
        let started = Instant::now();
        if mode != Mode::Quiet {
            note!(
                "analyses: {} models × {} tasks…",
                runs.len(),
                experiment.tasks.len()
            );
        }
        let results = study::analyze(experiment, &runs)?;
        record.stage("analyses", started.elapsed().as_secs_f64());
        if mode != Mode::Quiet {
            note!(
                "analyses: done in {}",
                duration(started.elapsed().as_secs_f64())
            );
        }
        results.write(&staging.join("data"))?;
        if args.save_embeddings {
            let path = staging.join("data").join("embeddings.safetensors");
            study::export::write_embeddings(&path, experiment, &runs)?;
        }
        let mut provenance = Provenance::current();
        if let Some(created) = &plan.created {
            provenance.created = created.clone();
        }
        let mut bundle = report::build_bundle(experiment, &runs, &results, &provenance)?;
        for (name, check) in &rounding_checks {
            if let Some(model) = bundle.manifest.models.iter_mut().find(|m| &m.name == name) {
                model.rounding_check = Some(check.entry());
            }
        }
        report::write_bundle(&staged_bundle, &bundle)?;
        (bundle, Some(results))
    };
    if !rounding_checks.is_empty() {
        let data = staging.join("data");
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create `{}`", data.display()))?;
        study::rounding::table(&rounding_checks).write(&data.join(study::rounding::TABLE_FILE))?;
    }
    let started = Instant::now();
    let bundle_bytes = std::fs::metadata(&staged_bundle)
        .or_else(|_| std::fs::metadata(&bundle_path))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut options = RenderOptions {
        single_file: false,
        templates: args.templates.clone(),
    };
    let page = report::render_report(&staging, &bundle, &options)?;
    let single = if args.single_file {
        options.single_file = true;
        Some(report::render_report(&staging, &bundle, &options)?)
    } else {
        None
    };
    record.stage("rendering", started.elapsed().as_secs_f64());
    // An unchanged run keeps the bundle and tables of the last one, but
    // for the rounding check's, which only a run with the check writes.
    let rounding_table = format!("data/{}", study::rounding::TABLE_FILE);
    let reused = |rel: &str| {
        unchanged
            && rel != rounding_table
            && (rel == viewer::bundle::FILE_NAME || rel.starts_with("data/"))
    };
    let committed_files = folder.commit(&staging, &mut record, reused)?;
    // The site index lives beside the report folders.
    let site = match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(root) => Some(report::write_site(root, args.templates.as_deref())?),
        None => None,
    };
    if mode != Mode::Quiet {
        note!(
            "rendering: {} figures in {}",
            page.figures,
            duration(started.elapsed().as_secs_f64())
        );
    }
    if !unchanged {
        crate::atomic::write_atomically(&digest_path, |w| w.write_all(digest.as_bytes()))?;
    }
    if !quiet {
        match &results {
            Some(results) => {
                for line in results.summary(experiment, &runs) {
                    say!("{line}")?;
                }
            }
            None => {
                say!("unchanged since the last run: the report was re-rendered from its bundle")?
            }
        }
        for (name, check) in &rounding_checks {
            say!("{name}: {}", check.summary_line())?;
        }
        say!("wrote   {}", data_dir.display())?;
        say!(
            "wrote   {} ({:.1} MB)",
            bundle_path.display(),
            bundle_bytes as f64 / 1e6
        )?;
        say!(
            "wrote   {} ({} figures)",
            committed(&page.page).display(),
            page.figures
        )?;
        if let Some(single) = single {
            say!(
                "wrote   {} (single file, {:.1} MB)",
                committed(&single.page).display(),
                single.page_bytes as f64 / 1e6
            )?;
        }
        for path in &committed_files.kept {
            say!(
                "kept    {}: the engine wrote it for an earlier run, but it was changed since, so it is yours now (delete it if it is no longer needed)",
                path.display()
            )?;
        }
        match site {
            Some(SiteIndex::Written { path, .. }) => say!("wrote   {}", path.display())?,
            Some(SiteIndex::NotOurs { path, root }) => say!(
                "skipped the site index: {}",
                SiteIndex::why_not_ours(&path, &root)
            )?,
            None => {}
        }
    }
    Ok(())
}

/// A fingerprint of everything the analyses and the bundle depend on: the
/// engine build, the experiment, and every captured record of every model.
fn inputs_digest(experiment: &Experiment, runs: &[ModelRun], check_rounding: bool) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    // The rounding check's figures go into the bundle's manifest.
    if check_rounding {
        hasher.update("check-rounding");
    }
    hasher.update(env!("CARGO_PKG_VERSION"));
    hasher.update(option_env!("ENGINE_GIT_REVISION").unwrap_or("unknown"));
    hasher.update(serde_json::to_string(&experiment.file).unwrap_or_default());
    hasher.update(Provenance::current().created);
    for run in runs {
        hasher.update(&run.name);
        hasher.update(&run.sha256);
        hasher.update(format!("{:?}", run.layers));
        for r in &run.records {
            hasher.update(r.prompt.to_le_bytes());
            hasher.update(&r.generated);
            for x in r.embedding.iter().chain(r.attention_mass.iter().flatten()) {
                hasher.update(x.to_le_bytes());
            }
        }
        if let Some(patching) = &run.patching {
            hasher.update(format!("{:?}", patching.tasks));
        }
    }
    report::bundle::hex(&hasher.finalize())
}

/// The first Ctrl-C asks the capture to stop after the prompt in flight
/// (everything captured is saved); a second one stops at once.
fn install_interrupt_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            use std::sync::atomic::Ordering;
            if runner::INTERRUPTED.swap(true, Ordering::SeqCst) {
                let _ = writeln!(std::io::stderr(), "\nstopped");
                std::process::exit(130);
            }
            let _ = writeln!(
                std::io::stderr(),
                "\nstopping after the prompt in flight (Ctrl-C again to stop at once)…"
            );
        });
    });
}

/// `i/N` → the shard, 1 ≤ i ≤ N.
pub(crate) fn parse_shard(text: &str) -> anyhow::Result<Shard> {
    let parsed = text.split_once('/').and_then(|(i, n)| {
        Some((
            i.trim().parse::<usize>().ok()?,
            n.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((index, count)) if index >= 1 && index <= count => Ok(Shard { index, count }),
        _ => Err(BadInput(format!(
            "--shard `{text}` is not a share: write it as i/N with 1 ≤ i ≤ N, e.g. --shard 3/8 (with Slurm: --shard $((SLURM_ARRAY_TASK_ID))/$SLURM_ARRAY_TASK_COUNT)"
        ))
        .into()),
    }
}

fn model_paths(args: &ReportArgs, experiment: &Experiment) -> anyhow::Result<Vec<PathBuf>> {
    if !args.models.is_empty() {
        return Ok(args.models.clone());
    }
    if !experiment.file.models.is_empty() {
        // Relative paths in an experiment file are relative to the file.
        let base = args
            .experiment
            .as_ref()
            .and_then(|p| p.parent())
            .unwrap_or(Path::new("."));
        return Ok(experiment
            .file
            .models
            .iter()
            .map(|m| base.join(m))
            .collect());
    }
    Ok(vec![crate::default_model::resolve(None)?])
}

/// The model's file stem, made unique among the runs so far.
fn unique_name(taken: &[String], path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut name = stem.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    name
}

/// An experiment rebuilt from the JSON a manifest or a shard recorded.
pub(crate) fn experiment_from_json(
    value: &serde_json::Value,
    origin: &str,
) -> anyhow::Result<Experiment> {
    let file: ExperimentFile = serde_json::from_value(value.clone())
        .with_context(|| format!("the experiment recorded in {origin} cannot be read"))?;
    Ok(Experiment::build(file, origin, None)?)
}
