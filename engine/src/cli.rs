//! Command-line arguments (clap derive; the doc comments are the help text)
//! and the dispatch from a parsed command to the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::capture::{CaptureError, ContextOptions, FlashAttention, ModelOptions};
use crate::commands;

/// Study how in-context learning changes a language model's insides.
///
/// Runs a GGUF model through llama.cpp and captures, for every layer, the
/// hidden states and attention it computes.
#[derive(Debug, Parser)]
#[command(
    name = "engine",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More log output (-v: progress, -vv: llama.cpp's own log).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one prompt and save every layer's hidden states (and optionally
    /// attention) as a NumPy .npz file; prints the most likely next tokens.
    Capture(CaptureArgs),
    /// Run an experiment (default: the `paper` preset, both tasks of the
    /// study) on one or more models: capture, score, analyse, and publish a
    /// report (HTML with static figures, CSV tables, the data bundle and an
    /// interactive viewer) plus the site index of every report.
    Report(ReportArgs),
    /// Assemble the shard files of `engine report --shard i/N` runs into the
    /// report, identical to a single-machine run.
    Merge(MergeArgs),
    /// Print a report bundle's summary: models, tasks, arrays and sizes.
    Inspect(InspectArgs),
    /// Write the index page over every report in a folder (default: reports/).
    Site(SiteArgs),
    /// Time a bare forward pass against the reduced and the full capture on
    /// prompts of given lengths, and print the ratios and peak memory.
    Bench(BenchArgs),
}

/// Which model to run and how.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A GGUF model file. Default: the SmolLM2-135M-Instruct model fetched by
    /// `bash scripts/fetch-model.sh` (or the file named by $ENGINE_MODEL).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Context size in tokens (default: just enough for the prompt).
    #[arg(long, value_name = "TOKENS")]
    pub ctx_size: Option<u32>,
}

/// How llama.cpp runs: shared by every command that runs a model.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Layers to offload to the GPU (needs a build with `--features cuda`;
    /// -1 offloads all).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub n_gpu_layers: i32,
    /// CPU threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// llama.cpp's fused flash-attention kernel. With `auto` (the default)
    /// each model takes the path that works for its architecture: attention
    /// recomputed from the queries and keys where that is verified (llama,
    /// qwen2, qwen3, granite, gemma2, gemma3), else llama.cpp's own
    /// probabilities with flash attention off. `off` reads llama.cpp's
    /// probabilities for every model; `on` is refused for an architecture
    /// the engine does not recompute.
    #[arg(long, value_enum, default_value_t = FlashAttention::Auto)]
    pub flash_attn: FlashAttention,
}

impl RuntimeArgs {
    /// Context options with these settings and everything else default.
    pub fn context_options(&self) -> ContextOptions {
        ContextOptions {
            threads: self.threads.unwrap_or(0),
            flash_attention: self.flash_attn,
            ..ContextOptions::default()
        }
    }
}

impl ModelArgs {
    pub fn model_options(&self) -> Result<ModelOptions, CaptureError> {
        Ok(ModelOptions {
            path: crate::default_model::resolve(self.model.as_deref())?,
            n_gpu_layers: self.runtime.n_gpu_layers,
        })
    }

    /// Context options for prompts of at most `longest` tokens.
    pub fn context_options(&self, longest: usize, n_ctx_train: usize) -> ContextOptions {
        // The context is the batch: llama.cpp aborts the process on a prompt
        // longer than the batch, so size it from the prompt (rounded up to
        // llama.cpp's KV padding of 256) unless the user chose.
        let auto = longest.div_ceil(256).max(1) * 256;
        let n_ctx = self
            .ctx_size
            .unwrap_or_else(|| auto.min(n_ctx_train.max(1)).max(longest.min(n_ctx_train)) as u32);
        ContextOptions {
            n_ctx,
            ..self.runtime.context_options()
        }
    }
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(
        long,
        value_name = "TEXT",
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a UTF-8 text file (used as is, final newline included).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Where to write the .npz file. Without it, only the next tokens are printed.
    #[arg(long, value_name = "FILE.npz")]
    pub out: Option<PathBuf>,
    /// Also save attention probabilities, `[layers, heads, tokens, tokens]`.
    /// With --flash-attn auto this reads llama.cpp's own softmax (flash
    /// attention is turned off for the run).
    #[arg(long)]
    pub attention: bool,
    /// Turn special-token text such as `<|im_start|>` into special tokens.
    #[arg(long)]
    pub parse_special: bool,
    /// How many of the most likely next tokens to print.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// An experiment file (TOML). Without it, the `paper` preset.
    #[arg(value_name = "EXPERIMENT.toml", conflicts_with = "preset")]
    pub experiment: Option<PathBuf>,
    /// A built-in experiment: `paper` (both tasks), `linear-regression` or
    /// `reading-comprehension`.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Models to compare on the same prompts (repeat the flag); replaces
    /// the experiment's `models`. Default: the default model.
    #[arg(long = "model", value_name = "PATH")]
    pub models: Vec<PathBuf>,
    /// Where to write the report. Default: reports/<experiment name>. A
    /// folder that exists must be empty or a report the engine wrote (see
    /// --force).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write into an --out folder that already holds other files, beside
    /// them. Even so the engine never replaces or deletes a file it did not
    /// write: a file of yours at a path the report needs stops the run.
    #[arg(long)]
    pub force: bool,
    /// Also write the pooled per-layer embeddings (safetensors) for your own analyses.
    #[arg(long)]
    pub save_embeddings: bool,
    /// Also write one self-contained HTML file (viewer and data inlined)
    /// that works opened straight from disk: for attaching to a paper or a
    /// review.
    #[arg(long)]
    pub single_file: bool,
    /// A folder of templates (report.html, site.html, style.css, report.js)
    /// replacing the built-in ones file by file.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Capture only share i of N of the prompts (1 ≤ i ≤ N) into a shard
    /// file under OUT/shards/, for running one study on many machines;
    /// `engine merge` assembles the shards into the report.
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
    /// Re-run the report in DIR from what its bundle and run record hold
    /// (experiment, seeds, models checked by SHA-256) into DIR-reproduced
    /// (or --out), and say whether the new bundle is identical.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["experiment", "preset", "shard"])]
    pub reproduce: Option<PathBuf>,
    /// Also measure how far rounding alone moves the results: rerun a
    /// sample of the prompts (whole answer batches, drawn under the
    /// experiment's seed) with the other flash-attention setting, and report
    /// how many greedy answers change and the largest change of a pooled
    /// hidden state and of an attention mass (data/rounding_check.csv).
    /// Costs about one more capture of the sampled prompts per model; the
    /// cache and every analysed number stay as without it.
    #[arg(long, conflicts_with = "shard")]
    pub check_rounding: bool,
    /// How many prompts --check-rounding reruns per model (at least; whole
    /// answer batches).
    #[arg(long, value_name = "N", default_value_t = crate::study::rounding::DEFAULT_PROMPTS, requires = "check_rounding")]
    pub check_rounding_prompts: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Shard files written by `engine report --shard i/N` (all N of them).
    #[arg(value_name = "SHARD.zip", required = true)]
    pub shards: Vec<PathBuf>,
    /// Where to write the report. Default: reports/<experiment name>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write into an --out folder that already holds other files, beside
    /// them. Even so the engine never replaces or deletes a file it did not
    /// write: a file of yours at a path the report needs stops the run.
    #[arg(long)]
    pub force: bool,
    /// Also write the single-file report.
    #[arg(long)]
    pub single_file: bool,
    /// A folder of templates replacing the built-in ones file by file.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A report's `bundle.safetensors.zst` (or the report folder holding it).
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
}

#[derive(Debug, Args)]
pub struct SiteArgs {
    /// The folder holding the reports, one subfolder each.
    #[arg(value_name = "DIR", default_value = "reports")]
    pub root: PathBuf,
    /// A folder of templates replacing the built-in ones file by file.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths in tokens.
    #[arg(long, value_name = "N,N", value_delimiter = ',', default_values_t = [100usize, 500])]
    pub tokens: Vec<usize>,
    /// Timed runs per measurement; the minimum is reported (the machine is noisy).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub repeats: usize,
    /// Time the analyses instead, on synthetic embeddings of the size given
    /// by --layers, --prompts, --dim and --permutations (default: Llama-2 70B
    /// on a full run).
    #[arg(long, conflicts_with = "bundle")]
    pub analyses: bool,
    /// Measure the report bundle instead: size, encoding, decoding, the
    /// viewer's recomputation and SVG drawing, on synthetic studies of the
    /// default run's size and of Llama-2 70B's.
    #[arg(long, conflicts_with = "pipeline")]
    pub bundle: bool,
    /// Time the whole report pipeline (capture, analyses, bundle, report)
    /// on an experiment against llama.cpp alone on the same prompts.
    #[arg(long)]
    pub pipeline: bool,
    /// The experiment for --pipeline (default: the `paper` preset).
    #[arg(long, value_name = "EXPERIMENT.toml", requires = "pipeline")]
    pub experiment: Option<PathBuf>,
    /// With --pipeline: write the prompts' tokens and spans as JSON, for
    /// timing another tool on exactly the same inputs.
    #[arg(long, value_name = "FILE.json", requires = "pipeline")]
    pub dump_prompts: Option<PathBuf>,
    #[arg(long, value_name = "N", default_value_t = 80, requires = "analyses")]
    pub layers: usize,
    #[arg(long, value_name = "N", default_value_t = 400, requires = "analyses")]
    pub prompts: usize,
    #[arg(long, value_name = "N", default_value_t = 8192, requires = "analyses")]
    pub dim: usize,
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "analyses")]
    pub permutations: usize,
}

pub use crate::errors::BadInput;

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Capture(args) => commands::capture::run(&args, cli.quiet),
        Command::Report(args) => commands::report::run(&args, cli.quiet),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Inspect(args) => commands::inspect::run(&args),
        Command::Merge(args) => commands::report::merge::run(&args, cli.quiet),
        Command::Site(args) => commands::site::run(&args, cli.quiet),
    }
}

/// The process exit code for an error: 2 when the input was at fault.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let bad_input = error.chain().any(|cause| {
        cause.downcast_ref::<BadInput>().is_some()
            || cause
                .downcast_ref::<CaptureError>()
                .is_some_and(CaptureError::is_bad_input)
            || cause
                .downcast_ref::<crate::experiment::ConfigError>()
                .is_some()
    });
    let interrupted = error.chain().any(|cause| {
        cause
            .downcast_ref::<crate::study::runner::Interrupted>()
            .is_some()
    });
    if interrupted {
        // The shell's convention for a process stopped by Ctrl-C (128 + SIGINT).
        130
    } else if bad_input {
        2
    } else {
        1
    }
}

/// Sets up logging: warnings only by default, more with -v, errors with -q.
pub fn init_logging(verbose: u8, quiet: bool) {
    let filter = match (quiet, verbose) {
        (true, _) => "error,llama.cpp=off",
        (false, 0) => "warn,llama.cpp=off",
        (false, 1) => "info,llama.cpp=off",
        (false, 2) => "debug,llama.cpp=debug",
        _ => "trace,llama.cpp=trace",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ENGINE_LOG").unwrap_or_else(|_| filter.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
