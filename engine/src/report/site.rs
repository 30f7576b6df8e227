//! The site index: `reports/index.html`, listing every report under a
//! folder with its models, tasks, date and headline numbers, read from each
//! report's bundle.

use std::path::{Path, PathBuf};

use serde::Serialize;
use viewer::bundle::{Bundle, FILE_NAME};
use viewer::view::{self, fmt_number, Derived, Selection};

use super::templates::Templates;
use crate::errors::BadInput;

#[derive(Debug, Serialize)]
struct Entry {
    href: String,
    title: String,
    models: Vec<String>,
    tasks: Vec<String>,
    created: String,
    headline: Vec<String>,
}

/// One line per model × task: behaviour before → after, and the largest
/// alignment gain with the headline hypothesis.
pub fn headline(bundle: &Bundle) -> Vec<String> {
    let mut lines = Vec::new();
    for (m, model) in bundle.manifest.models.iter().enumerate() {
        for (t, task) in bundle.manifest.tasks.iter().enumerate() {
            let selection = Selection {
                model: m,
                task: t,
                ..Selection::default()
            };
            let Ok(derived) = Derived::for_selection(bundle, &selection, None) else {
                continue;
            };
            let Ok(numbers) = view::numbers(bundle, &derived, &selection) else {
                continue;
            };
            let behaviour = if task.behavior.metric == "correct" {
                format!(
                    "accuracy {:.0}% → {:.0}%",
                    100.0 * numbers.behavior_zero,
                    100.0 * numbers.behavior_k
                )
            } else {
                format!(
                    "mean {} {} → {}",
                    task.behavior.metric,
                    fmt_number(numbers.behavior_zero),
                    fmt_number(numbers.behavior_k)
                )
            };
            let alignment = match (derived.largest_alignment_gain(), task.hypotheses.first()) {
                (Some((l, g)), Some(h)) => format!(
                    "; “{h}” alignment {:+.3} at layer {}",
                    g,
                    model.layers.get(l).copied().unwrap_or(0)
                ),
                _ => String::new(),
            };
            lines.push(format!(
                "{} · {}: {behaviour}{alignment}",
                model.name, task.name
            ));
        }
    }
    lines
}

/// Writes `root/index.html` over every `root/*/bundle.safetensors.zst`;
/// returns its path and the number of reports listed.
pub fn write_site(root: &Path, templates: Option<&Path>) -> anyhow::Result<(PathBuf, usize)> {
    let entries = std::fs::read_dir(root).map_err(|e| {
        BadInput(format!(
            "cannot read the reports folder `{}`: {e} — pass the folder that holds your reports (default `reports/`)",
            root.display()
        ))
    })?;
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(FILE_NAME).is_file())
        .collect();
    folders.sort();
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    for folder in folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bundle = match std::fs::read(folder.join(FILE_NAME))
            .map_err(|e| e.to_string())
            .and_then(|bytes| Bundle::decode(&bytes).map_err(|e| e.to_string()))
        {
            Ok(bundle) => bundle,
            Err(e) => {
                skipped.push(format!("{name}: {e}"));
                continue;
            }
        };
        reports.push(Entry {
            href: format!("{name}/index.html"),
            title: bundle.manifest.title.clone(),
            models: bundle
                .manifest
                .models
                .iter()
                .map(|m| m.name.clone())
                .collect(),
            tasks: bundle
                .manifest
                .tasks
                .iter()
                .map(|t| t.name.clone())
                .collect(),
            created: bundle.manifest.created.clone(),
            headline: headline(&bundle),
        });
    }
    let html = Templates::load(templates)?.render_site(&serde_json::json!({
        "reports": reports,
        "skipped": skipped,
    }))?;
    let path = root.join("index.html");
    crate::atomic::write_atomically(&path, |w| std::io::Write::write_all(w, html.as_bytes()))?;
    Ok((path, reports.len()))
}
