//! `engine inspect BUNDLE`: what a report bundle holds.

use crate::cli::InspectArgs;
use crate::commands::say;

pub(crate) fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let path = if args.bundle.is_dir() {
        args.bundle.join(viewer::bundle::FILE_NAME)
    } else {
        args.bundle.clone()
    };
    let compressed = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let bundle = crate::report::read_bundle(&path)?;
    let m = &bundle.manifest;
    say!("{}  ({})", m.title, path.display())?;
    say!(
        "format  {} version {}, engine {}{}, made {}, seed {}",
        m.format,
        m.version,
        m.engine_version,
        m.engine_revision
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        m.created,
        m.seed
    )?;
    for model in &m.models {
        say!(
            "model   {}: {} ({}, {}), {} of {} layers, {} heads, width {}, sha256 {}",
            model.name,
            model.file_name,
            model.architecture,
            model.quantization,
            model.layers.len(),
            model.n_layer,
            model.n_head,
            model.n_embd,
            model.sha256
        )?;
    }
    for task in &m.tasks {
        say!(
            "task    {} ({}): {} targets × 2 states ({}-shot), conditions: {}; hypotheses: {}",
            task.name,
            task.kind,
            task.target_conditions.len(),
            task.shots,
            task.conditions.join(", "),
            task.hypotheses.join(", ")
        )?;
    }
    say!("prompts {}", m.prompts.len())?;
    let raw: usize = bundle.tensors.values().map(|t| t.data.len() * 4).sum();
    say!(
        "arrays  {} ({:.1} MB of f32, {:.1} MB compressed)",
        bundle.tensors.len(),
        raw as f64 / 1e6,
        compressed as f64 / 1e6
    )?;
    for (name, tensor) in &bundle.tensors {
        say!(
            "  {name:<48} {:?}  {:.2} MB",
            tensor.shape,
            (tensor.data.len() * 4) as f64 / 1e6
        )?;
    }
    Ok(())
}
