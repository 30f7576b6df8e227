//! Beyond one machine: `engine report --shard i/N` writes its share of the
//! captured prompts as one shard file (a zip of capture-cache entries and a
//! description of the run); `engine merge` checks that the shards belong
//! together and cover every share, unpacks them into the report's capture
//! cache, and publishes the report exactly as a single-machine run would
//! (the same cache entries, the same analyses, the same bytes).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::ValueEnum as _;
use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::{claim, publish_into, Plan};
use crate::capture::FlashAttention;
use crate::cli::{BadInput, MergeArgs, ReportArgs, RuntimeArgs};
use crate::experiment::Experiment;
use crate::study::cache::PromptCache;
use crate::study::runner::Shard;

/// Bump when the shard file's layout changes.
const SHARD_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ShardModel {
    name: String,
    path: PathBuf,
    sha256: String,
}

/// `shard.json`: which run and which share a shard file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardInfo {
    format: u32,
    index: usize,
    count: usize,
    experiment: serde_json::Value,
    models: Vec<ShardModel>,
    /// Capture settings that change the numbers (part of the cache keys).
    flash_attention: String,
    n_gpu_layers: i32,
}

/// Writes `out/shards/shard-i-of-N.zip` with the shard's cache entries.
pub(crate) fn write_shard(
    out: &Path,
    experiment: &Experiment,
    shard: Shard,
    caches: &[(String, PathBuf, String, PromptCache)],
    runtime: &RuntimeArgs,
) -> anyhow::Result<PathBuf> {
    let dir = out.join("shards");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join(format!("shard-{}-of-{}.zip", shard.index, shard.count));
    let info = ShardInfo {
        format: SHARD_FORMAT,
        index: shard.index,
        count: shard.count,
        experiment: serde_json::to_value(&experiment.file)?,
        models: caches
            .iter()
            .map(|(name, path, sha, _)| ShardModel {
                name: name.clone(),
                path: std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
                sha256: sha.clone(),
            })
            .collect(),
        flash_attention: format!("{:?}", runtime.flash_attn).to_lowercase(),
        n_gpu_layers: runtime.n_gpu_layers,
    };
    crate::atomic::write_atomically(&path, |w| {
        let mut zip = ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .unix_permissions(0o644)
            .large_file(true);
        zip.start_file("shard.json", options)
            .map_err(std::io::Error::other)?;
        zip.write_all(serde_json::to_string_pretty(&info)?.as_bytes())?;
        for (_, _, _, cache) in caches {
            let short = cache
                .dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut entries: Vec<PathBuf> = std::fs::read_dir(cache.dir())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rec" || x == "json"))
                .collect();
            entries.sort();
            for entry in entries {
                let name = entry
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                zip.start_file(format!("cache/{short}/{name}"), options)
                    .map_err(std::io::Error::other)?;
                zip.write_all(&std::fs::read(&entry)?)?;
            }
        }
        let bytes = zip.finish().map_err(std::io::Error::other)?.into_inner();
        w.write_all(&bytes)
    })
    .with_context(|| format!("cannot write the shard file `{}`", path.display()))?;
    Ok(path)
}

/// A shard file's cache entries: `(path below the cache, bytes)`.
type CacheEntries = Vec<(String, Vec<u8>)>;

fn read_shard(path: &Path) -> anyhow::Result<(ShardInfo, CacheEntries)> {
    let bad = |why: String| {
        BadInput(format!(
            "`{}` is not a usable shard file: {why}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut info: Option<ShardInfo> = None;
    let mut entries = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        if name == "shard.json" {
            info = Some(serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?);
        } else if let Some(rest) = name.strip_prefix("cache/") {
            // Only `SHA16/NAME` below the cache: nothing may escape it.
            let safe = rest.split('/').count() == 2
                && rest
                    .split('/')
                    .all(|part| !part.is_empty() && part != ".." && part != ".");
            if !safe {
                return Err(bad(format!("unexpected entry `{name}`")).into());
            }
            entries.push((rest.to_string(), bytes));
        }
    }
    let info = info.ok_or_else(|| bad("it has no shard.json".into()))?;
    if info.format != SHARD_FORMAT {
        return Err(bad(format!(
            "it is in shard format {}, this engine reads format {SHARD_FORMAT}",
            info.format
        ))
        .into());
    }
    Ok((info, entries))
}

/// `engine merge`: every shard present and consistent, then the report.
pub(crate) fn run(args: &MergeArgs, quiet: bool) -> anyhow::Result<()> {
    let mut shards = Vec::new();
    for path in &args.shards {
        shards.push((path.clone(), read_shard(path)?));
    }
    let Some((first_path, (first, _))) = shards.first() else {
        return Err(BadInput("no shard files given".into()).into());
    };
    let first = first.clone();
    let mut seen = vec![false; first.count];
    for (path, (info, _)) in &shards {
        let same_run = info.experiment == first.experiment
            && info
                .models
                .iter()
                .map(|m| &m.sha256)
                .eq(first.models.iter().map(|m| &m.sha256))
            && info.count == first.count
            && info.flash_attention == first.flash_attention
            && info.n_gpu_layers == first.n_gpu_layers;
        if !same_run {
            return Err(BadInput(format!(
                "`{}` and `{}` come from different runs (experiment, models, shard count or capture settings differ)",
                first_path.display(),
                path.display()
            ))
            .into());
        }
        if info.index == 0 || info.index > info.count || seen[info.index - 1] {
            return Err(BadInput(format!(
                "`{}` is shard {} of {}, which is given twice or is out of range",
                path.display(),
                info.index,
                info.count
            ))
            .into());
        }
        seen[info.index - 1] = true;
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| !**s)
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    if !missing.is_empty() {
        return Err(BadInput(format!(
            "shards {} of {} are missing; run `engine report --shard i/{}` for them and pass every shard file",
            missing.join(", "),
            first.count,
            first.count
        ))
        .into());
    }

    let experiment = super::experiment_from_json(
        &first.experiment,
        &format!("the shard `{}`", first_path.display()),
    )?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&experiment.file.name));
    let flash = FlashAttention::from_str(&first.flash_attention, true).unwrap_or_default();
    let report_args = ReportArgs {
        experiment: None,
        preset: None,
        models: Vec::new(),
        out: Some(out.clone()),
        force: args.force,
        save_embeddings: false,
        single_file: args.single_file,
        templates: args.templates.clone(),
        shard: None,
        reproduce: None,
        check_rounding: false,
        check_rounding_prompts: crate::study::rounding::DEFAULT_PROMPTS,
        runtime: RuntimeArgs {
            n_gpu_layers: first.n_gpu_layers,
            threads: None,
            flash_attn: flash,
        },
    };
    let plan = Plan {
        models: first.models.iter().map(|m| m.path.clone()).collect(),
        known_sha256: first
            .models
            .iter()
            .map(|m| Some(m.sha256.clone()))
            .collect(),
        experiment,
        out,
        created: None,
    };
    // The folder is claimed before the shards' captures are unpacked into it.
    let folder = claim(&plan, &report_args)?;
    let cache_root = crate::study::runner::cache_root(&plan.out);
    for (_, (_, entries)) in &shards {
        for (name, bytes) in entries {
            let path = cache_root.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create `{}`", parent.display()))?;
            }
            crate::atomic::write_atomically(&path, |w| w.write_all(bytes))?;
        }
    }
    publish_into(&folder, &plan, &report_args, quiet)
}
