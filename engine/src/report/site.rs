//! The site index: `reports/index.html`, listing every report under a
//! folder with its models, tasks, date and headline numbers, read from each
//! report's bundle. The index carries the engine's mark ([`GENERATOR_MARK`]),
//! and only an index with that mark is ever replaced: a hand-written
//! `index.html` in the folder is left as it is.

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

/// Marks a site index as the engine's: in the built-in template, and added
/// to the head of a custom one that lacks it.
pub const GENERATOR_MARK: &str = r#"<meta name="generator" content="engine site index">"#;

/// What [`write_site`] did.
#[derive(Debug)]
pub enum SiteIndex {
    /// Wrote the index at `path`, listing this many reports.
    Written { path: PathBuf, reports: usize },
    /// Left `root/index.html` as it is: the engine did not write it.
    NotOurs { path: PathBuf, root: PathBuf },
}

impl SiteIndex {
    /// Why an index was left as it is, and how to get one: a clause that
    /// starts with the file's name.
    pub fn why_not_ours(path: &Path, root: &Path) -> String {
        format!(
            "`{}` is not a site index the engine wrote (it lacks the engine's generator mark), and the engine never replaces a file it did not write: move it elsewhere and run `engine site {}` to list every report there",
            path.display(),
            root.display()
        )
    }
}

/// Whether `path` may be written as the site index: nothing is there, or
/// an index with the engine's mark.
fn ours_or_free(path: &Path) -> bool {
    match path.symlink_metadata() {
        Err(_) => true,
        Ok(meta) => {
            meta.is_file()
                && std::fs::read(path)
                    .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(GENERATOR_MARK))
        }
    }
}

/// `html` with the engine's mark: as it is if it has the mark, else with the
/// mark added after `<head>` (or after the doctype, or at the start).
fn with_mark(html: String) -> String {
    if html.contains(GENERATOR_MARK) {
        return html;
    }
    let lower = html.to_ascii_lowercase();
    match tag_end(&lower, "<head").or_else(|| tag_end(&lower, "<!doctype")) {
        Some(at) => format!("{}\n{GENERATOR_MARK}{}", &html[..at], &html[at..]),
        None => format!("{GENERATOR_MARK}\n{html}"),
    }
}

/// The index just past the `>` of the first tag `name` (`<head`, not
/// `<header`) in lower-case `html`.
fn tag_end(html: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = html[from..].find(name) {
        let after = from + found + name.len();
        match html.as_bytes().get(after) {
            Some(b'>' | b' ' | b'\t' | b'\n' | b'\r') => {
                return html[after..].find('>').map(|end| after + end + 1)
            }
            _ => from = after,
        }
    }
    None
}

/// Writes `root/index.html` over every `root/*/bundle.safetensors.zst`,
/// unless a file the engine did not write is there.
pub fn write_site(root: &Path, templates: Option<&Path>) -> anyhow::Result<SiteIndex> {
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
    let html = with_mark(Templates::load(templates)?.render_site(&serde_json::json!({
        "reports": reports,
        "skipped": skipped,
    }))?);
    let path = root.join("index.html");
    if !ours_or_free(&path) {
        return Ok(SiteIndex::NotOurs {
            path,
            root: root.to_path_buf(),
        });
    }
    crate::atomic::write_atomically(&path, |w| std::io::Write::write_all(w, html.as_bytes()))?;
    Ok(SiteIndex::Written {
        path,
        reports: reports.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_template_without_the_mark_gets_it_in_its_head() {
        let page =
            "<!doctype html>\n<html><header>x</header><HEAD lang=en><title>t</title></HEAD></html>";
        let marked = with_mark(page.to_string());
        assert_eq!(
            marked,
            format!("<!doctype html>\n<html><header>x</header><HEAD lang=en>\n{GENERATOR_MARK}<title>t</title></HEAD></html>")
        );
        assert_eq!(with_mark(marked.clone()), marked, "marked once");
        assert_eq!(
            with_mark("<!DOCTYPE html><p>hi".into()),
            format!("<!DOCTYPE html>\n{GENERATOR_MARK}<p>hi")
        );
        assert_eq!(
            with_mark("<p>hi".into()),
            format!("{GENERATOR_MARK}\n<p>hi")
        );
    }

    #[test]
    fn the_built_in_site_template_carries_the_mark() {
        let html = Templates::load(None)
            .and_then(|t| t.render_site(&serde_json::json!({ "reports": [], "skipped": [] })))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(html.contains(GENERATOR_MARK));
    }
}
