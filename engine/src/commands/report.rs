//! `engine report`: an experiment on one or more models, from prompts to a
//! published report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::capture::{Model, ModelOptions, Session};
use crate::cli::{BadInput, ReportArgs};
use crate::commands::say;
use crate::experiment::Experiment;
use crate::report::{self, Provenance, RenderOptions};
use crate::study::{self, ModelRun};

pub(crate) fn run(args: &ReportArgs, quiet: bool) -> anyhow::Result<()> {
    let experiment = match (&args.experiment, &args.preset) {
        (Some(path), _) => Experiment::from_path(path)?,
        (None, Some(name)) => Experiment::preset(name)?,
        (None, None) => Experiment::preset("paper")?,
    };
    let model_paths = model_paths(args, &experiment)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&experiment.file.name));
    let data_dir = out.join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        BadInput(format!(
            "cannot create the report folder `{}`: {e}",
            data_dir.display()
        ))
    })?;

    let mut progress = std::io::stderr();
    let mut runs = Vec::new();
    for path in &model_paths {
        let model = Model::load(&ModelOptions {
            path: path.clone(),
            n_gpu_layers: args.runtime.n_gpu_layers,
        })?;
        let info = model.info().clone();
        let layers = experiment.layers(info.n_layer)?;
        let tokenized = study::tokenize_all(&model, &experiment)?;
        let base = args.runtime.context_options();
        let options = study::context_for(&experiment, &tokenized, &model, base)?;
        let mut session = Session::new(&model, options)?;
        let name = unique_name(&runs, path);
        if !quiet {
            let _ = writeln!(
                progress,
                "{name}: {} prompts, {} layers",
                experiment.prompts.len(),
                layers.len()
            );
        }
        let started = Instant::now();
        let sink: Option<&mut dyn Write> = if quiet { None } else { Some(&mut progress) };
        let records = study::capture_all(&mut session, &experiment, &tokenized, &layers, sink)?;
        runs.push(ModelRun {
            name,
            info,
            layers,
            records,
            capture_seconds: started.elapsed().as_secs_f64(),
        });
    }

    let started = Instant::now();
    let results = study::analyze(&experiment, &runs)?;
    if !quiet {
        let _ = writeln!(
            progress,
            "analyses took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    results.write(&data_dir)?;
    if args.save_embeddings {
        let path = data_dir.join("embeddings.safetensors");
        study::export::write_embeddings(&path, &experiment, &runs)?;
    }
    let started = Instant::now();
    let bundle = report::build_bundle(&experiment, &runs, &results, &Provenance::current())?;
    let bundle_path = out.join(viewer::bundle::FILE_NAME);
    let bundle_bytes = report::write_bundle(&bundle_path, &bundle)?;
    let mut options = RenderOptions {
        single_file: false,
        templates: args.templates.clone(),
    };
    let page = report::render_report(&out, &bundle, &options)?;
    let single = if args.single_file {
        options.single_file = true;
        Some(report::render_report(&out, &bundle, &options)?)
    } else {
        None
    };
    // The site index lives beside the report folders.
    let site = match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(root) => Some(report::write_site(root, args.templates.as_deref())?.0),
        None => None,
    };
    if !quiet {
        let _ = writeln!(
            progress,
            "rendering took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for line in results.summary(&experiment, &runs) {
            say!("{line}")?;
        }
        say!("wrote   {}", data_dir.display())?;
        say!(
            "wrote   {} ({:.1} MB)",
            bundle_path.display(),
            bundle_bytes as f64 / 1e6
        )?;
        say!("wrote   {} ({} figures)", page.page.display(), page.figures)?;
        if let Some(single) = single {
            say!(
                "wrote   {} (single file, {:.1} MB)",
                single.page.display(),
                single.page_bytes as f64 / 1e6
            )?;
        }
        if let Some(site) = site {
            say!("wrote   {}", site.display())?;
        }
    }
    Ok(())
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
fn unique_name(runs: &[ModelRun], path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut name = stem.clone();
    let mut n = 2;
    while runs.iter().any(|r| r.name == name) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    name
}
