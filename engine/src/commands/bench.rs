//! `engine bench`: what the capture costs on top of llama.cpp's own forward pass.
//!
//! Three ways to run the same prompt, each timed as the minimum of several
//! runs after a warm-up (the machine is noisy; the minimum is the least
//! disturbed run). Bare and reduced runs alternate; the full runs come after
//! them in a context of their own, so that the peak memory of each phase can
//! be read separately:
//! - bare: flash attention as asked (default auto), no tensor callback at all;
//! - reduced: what an analysis run keeps: the last token's hidden state in
//!   every layer and its attention mass on two key spans, reduced inside the
//!   callback (recomputed attention, so flash attention stays on);
//! - full: every layer's hidden states and every attention row, copied out
//!   (llama.cpp's softmax, so flash attention off).

use std::time::{Duration, Instant};

use crate::capture::{
    Activations, AttentionKeep, AttentionPath, AttentionRequest, CaptureRequest, ContextOptions,
    FlashAttention, HiddenRequest, Model, Pooling, Session, Transfers,
};
use crate::cli::{BadInput, BenchArgs};
use crate::commands::say;

/// Text the benchmark prompts are cut from: ordinary prose, so that the
/// tokenizer behaves as on real prompts.
const BENCH_TEXT: &str =
    "Hannah is reading a book in the garden while Max is cooking dinner for his family. \
    The slope of the line is three and the intercept is two, so when x is four, y is fourteen. \
    In the morning the market opens early and the baker sells fresh bread to the neighbours. ";

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.analyses {
        return run_analyses(args);
    }
    if args.bundle {
        return run_bundle();
    }
    if args.pipeline {
        return run_pipeline(args);
    }
    if args.tokens.is_empty() || args.tokens.contains(&0) || args.repeats == 0 {
        return Err(
            BadInput("--tokens needs positive lengths and --repeats at least 1".into()).into(),
        );
    }
    let model = Model::load(&args.model.model_options()?)?;
    let info = model.info().clone();
    let mut lengths = args.tokens.clone();
    lengths.sort_unstable();
    let longest = *lengths.last().unwrap_or(&1);
    let base = args.model.context_options(longest, info.n_ctx_train);

    say!(
        "model    {} ({}, {:.2} GB): {} layers, width {}, {} query heads over {} KV heads, vocabulary {}",
        info.path.display(),
        info.description,
        info.file_len as f64 / 1e9,
        info.n_layer,
        info.n_embd,
        info.n_head,
        info.n_head_kv,
        info.n_vocab
    )?;
    say!("llama    {}", crate::capture::llama_build_info())?;
    say!(
        "threads  {}; flash attention {:?} for bare and reduced, off for full; min of {} runs (bare and reduced interleaved)",
        if base.threads == 0 { "all cores".to_string() } else { base.threads.to_string() },
        base.flash_attention,
        args.repeats
    )?;
    say!("")?;
    say!(
        "{:>7}  {:>12}  {:>15}  {:>12}  {:>12}  {:>9}",
        "tokens",
        "bare forward",
        "reduced capture",
        "full capture",
        "reduced/bare",
        "full/bare"
    )?;

    let mut bare = Session::new(
        &model,
        ContextOptions {
            with_callback: false,
            ..base.clone()
        },
    )?;
    let mut reduced = Session::new(&model, base.clone())?;
    let mut rows = Vec::new();
    for &n in &lengths {
        let tokens = bench_tokens(&model, n)?;
        let reduced_request = reduced_request(n);
        let mut kept_reduced = 0;
        // Bare and reduced alternate, so that a slow spell of the machine
        // hits both alike.
        let mut t_bare = Duration::MAX;
        let mut t_reduced = Duration::MAX;
        bare.capture(&tokens, &CaptureRequest::default())?;
        let before = reduced.transfers();
        reduced.capture(&tokens, &reduced_request)?;
        let moved_reduced = reduced.transfers() - before;
        for _ in 0..args.repeats {
            t_bare = t_bare.min(timed(|| {
                bare.capture(&tokens, &CaptureRequest::default()).map(drop)
            })?);
            t_reduced = t_reduced.min(timed(|| {
                kept_reduced = kept_bytes(&reduced.capture(&tokens, &reduced_request)?);
                Ok(())
            })?);
        }
        rows.push((n, tokens, t_bare, t_reduced, kept_reduced, moved_reduced));
    }
    let peak_light = peak_rss_bytes();
    drop((bare, reduced));

    let full_options = ContextOptions {
        flash_attention: FlashAttention::Off,
        attention_path: Some(AttentionPath::Materialized),
        ..base.clone()
    };
    let mut full = Session::new(&model, full_options)?;
    let mut kept = (0, 0);
    let mut moved = Vec::new();
    for (n, tokens, t_bare, t_reduced, kept_reduced, moved_reduced) in rows {
        let request = full_request(n);
        let mut kept_full = 0;
        let before = full.transfers();
        let t_full = min_time(args.repeats, || {
            kept_full = kept_bytes(&full.capture(&tokens, &request)?);
            Ok(())
        })?;
        // min_time ran the capture 1 + repeats times, each moving the same.
        let moved_full = per_run(full.transfers() - before, 1 + args.repeats);
        kept = (kept_reduced, kept_full);
        moved.push((n, moved_reduced, moved_full));
        say!(
            "{n:>7}  {:>9.1} ms  {:>12.1} ms  {:>9.1} ms  {:>11.3}×  {:>8.3}×",
            ms(t_bare),
            ms(t_reduced),
            ms(t_full),
            t_reduced.as_secs_f64() / t_bare.as_secs_f64(),
            t_full.as_secs_f64() / t_bare.as_secs_f64()
        )?;
    }
    let peak_full = peak_rss_bytes();
    say!("")?;
    say!("taken out of llama.cpp's graph per prompt (each observed node is a graph split: on a GPU a device synchronisation; each copy a device-to-host read):")?;
    for (n, reduced, full) in moved {
        say!(
            "{n:>7} tokens  reduced: {} nodes, {} copies, {}; full: {} nodes, {} copies, {}",
            reduced.observed,
            reduced.copies,
            bytes(reduced.bytes),
            full.observed,
            full.copies,
            bytes(full.bytes)
        )?;
    }
    say!(
        "kept per prompt of {longest} tokens: reduced {:.1} KB, full {:.1} MB",
        kept.0 as f64 / 1e3,
        kept.1 as f64 / 1e6
    )?;
    say!(
        "peak resident memory: {:.0} MB after the bare and reduced runs, {:.0} MB after the full runs",
        peak_light as f64 / 1e6,
        peak_full as f64 / 1e6
    )?;
    Ok(())
}

/// The analyses at a given scale on synthetic embeddings with planted
/// structure (see `analysis::bench`).
fn run_analyses(args: &BenchArgs) -> anyhow::Result<()> {
    say!(
        "analyses on synthetic embeddings: {} layers × {} prompts × {} features, {} permutations, {} threads",
        args.layers,
        args.prompts,
        args.dim,
        args.permutations,
        rayon::current_num_threads()
    )?;
    let report = crate::analysis::bench::synthetic_benchmark(
        args.layers,
        args.prompts,
        args.dim,
        args.permutations,
        7,
    )?;
    let s = &report.seconds;
    for (stage, seconds) in [
        ("generate embeddings", s.generate_embeddings),
        ("similarity matrices", s.similarity),
        ("alignment (2 hypotheses)", s.alignment),
        ("permutation p-values", s.permutation_test),
        ("Benjamini–Hochberg", s.benjamini_hochberg),
        (
            &format!("bootstrap intervals ({} samples)", report.bootstrap_samples),
            s.bootstrap,
        ),
        ("ridge probe, nested CV", s.ridge_probe),
        ("total", s.total),
    ] {
        say!("  {stage:<34} {seconds:>8.2} s")?;
    }
    say!(
        "peak resident memory: {:.0} MB",
        peak_rss_bytes() as f64 / 1e6
    )?;
    let f = &report.findings;
    say!(
        "planted structure recovered: activity alignment {:.3} (first layer) → {:.3} (last), slope {:.3} → {:.3}",
        f.activity_alignment_first_last.0,
        f.activity_alignment_first_last.1,
        f.slope_alignment_first_last.0,
        f.slope_alignment_first_last.1
    )?;
    Ok(())
}

fn timed(f: impl FnOnce() -> Result<(), crate::capture::CaptureError>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

/// One run's share of `total`, moved by `runs` identical runs.
fn per_run(total: Transfers, runs: usize) -> Transfers {
    let runs = runs.max(1) as u64;
    Transfers {
        observed: total.observed / runs,
        copies: total.copies / runs,
        bytes: total.bytes / runs,
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} KB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One warm-up run, then the fastest of `repeats` runs.
fn min_time<T>(
    repeats: usize,
    mut f: impl FnMut() -> Result<T, crate::capture::CaptureError>,
) -> anyhow::Result<Duration> {
    f()?;
    let mut best = Duration::MAX;
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn bench_tokens(model: &Model, n: usize) -> anyhow::Result<Vec<i32>> {
    let once = model.tokenize(BENCH_TEXT, false)?;
    let copies = n / once.len().max(1) + 1;
    let mut tokens = model.tokenize(&BENCH_TEXT.repeat(copies), false)?;
    tokens.truncate(n);
    Ok(tokens)
}

/// The last token's hidden state in every layer and its attention mass on
/// two spans, the shape of a reading-comprehension analysis run.
fn reduced_request(n: usize) -> CaptureRequest {
    CaptureRequest {
        hidden: HiddenRequest::Pooled(vec![Pooling::Token(n - 1)]),
        attention: Some(AttentionRequest {
            queries: vec![n - 1],
            keep: AttentionKeep::SpanMass(vec![n / 4..n / 2, n / 2..3 * n / 4]),
        }),
        final_norm: false,
        all_logits: false,
    }
}

fn full_request(n: usize) -> CaptureRequest {
    CaptureRequest {
        hidden: HiddenRequest::All,
        attention: Some(AttentionRequest {
            queries: (0..n).collect(),
            keep: AttentionKeep::Rows,
        }),
        final_norm: true,
        all_logits: false,
    }
}

fn kept_bytes(a: &Activations) -> usize {
    let arrays = [&a.hidden, &a.attention, &a.final_norm];
    4 * (arrays
        .iter()
        .filter_map(|x| x.as_ref())
        .map(|x| x.data.len())
        .sum::<usize>()
        + a.logits_last.len())
}

/// The process's peak resident set size (`VmHWM`), or 0 where unknown.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bundle size and the cost of the report's steps on synthetic studies of
/// the default run's size and of Llama-2 70B's (80 layers, 64 heads, 400
/// targets): encoding, decoding, the viewer's recomputation and one redraw's
/// data, and drawing every figure as SVG.
fn run_bundle() -> anyhow::Result<()> {
    use viewer::synthetic::{bundle, Spec};
    use viewer::view::{figures, Derived, Selection};
    say!("study                     raw MB  bundle MB  encode  decode  derive  figures  svg")?;
    for (name, spec) in [
        ("default-sized (30×9, 36)", Spec::DEFAULT_SIZED),
        ("70B-sized (80×64, 400)", Spec::LLAMA_70B),
    ] {
        let b = bundle(spec);
        let raw: usize = b.tensors.values().map(|t| t.data.len() * 4).sum();
        let started = Instant::now();
        let compressed = crate::report::bundle::encode_bundle(&b)?;
        let encode = started.elapsed();
        let started = Instant::now();
        let decoded = viewer::bundle::Bundle::decode(&compressed)?;
        let decode = started.elapsed();
        let started = Instant::now();
        let selection = Selection {
            conditions: vec![0, 1],
            ..Selection::default()
        }
        .clamp(&decoded);
        let derived = Derived::for_selection(&decoded, &selection, None)?;
        let derive = started.elapsed();
        let started = Instant::now();
        let drawn = figures(&decoded, &derived, &selection)?;
        let figure_data = started.elapsed();
        let started = Instant::now();
        for (_, figure) in &drawn {
            let (w, h) = viewer::charts::figure_size(figure);
            viewer::charts::render_svg(figure, w, h)?;
        }
        let svg = started.elapsed();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        say!(
            "{name:<25} {:>6.1} {:>10.1}  {:>6}  {:>6}  {:>6}  {:>7}  {:>6}",
            raw as f64 / 1e6,
            compressed.len() as f64 / 1e6,
            ms(encode),
            ms(decode),
            ms(derive),
            ms(figure_data),
            ms(svg)
        )?;
    }
    say!("(derive: the viewer's recomputation for a subset of conditions; figures: one redraw's data)")?;
    Ok(())
}

/// The whole `engine report` pipeline on an experiment (default: the
/// `paper` preset) against llama.cpp alone on the same prompts: a bare
/// forward pass of every prompt plus the same greedy answer, no callback.
/// Optionally writes the prompts' tokens as JSON for an outside comparison
/// (scripts/bench_transformers.py).
fn run_pipeline(args: &BenchArgs) -> anyhow::Result<()> {
    let experiment = match &args.experiment {
        Some(path) => crate::experiment::Experiment::from_path(path)?,
        None => crate::experiment::Experiment::preset("paper")?,
    };
    let started = Instant::now();
    let model = Model::load(&args.model.model_options()?)?;
    let load = started.elapsed();
    let info = model.info().clone();
    let (experiment, chat) =
        crate::study::prompting::prompts_for_model(&experiment, "bench", &info)?;
    let experiment = experiment.into_owned();
    let layers = experiment.layers(info.n_layer)?;
    let tokenized = crate::study::tokenize_all(&model, &experiment)?;
    let total_tokens: usize = tokenized.tokens.iter().map(Vec::len).sum();
    let max_new = experiment.file.capture.max_new_tokens;
    if let Some(path) = &args.dump_prompts {
        let prompts: Vec<serde_json::Value> = experiment
            .prompts
            .iter()
            .zip(&tokenized.tokens)
            .map(|(p, tokens)| {
                let task = &experiment.tasks[p.task];
                let spans = task.attention_segments.as_ref().map(|(r, d)| {
                    let anchors = &tokenized.anchors[p.id];
                    let range = |label: &String| {
                        p.segments
                            .get(label)
                            .and_then(|b| b.first())
                            .map(|b| crate::experiment::spans::tokens_in(anchors, b))
                            .map(|r| [r.start, r.end])
                    };
                    [range(r), range(d)]
                });
                serde_json::json!({ "tokens": tokens, "spans": spans })
            })
            .collect();
        // The answer is the first line: both tools stop after a newline.
        let newline_tokens: Vec<i32> = (0..info.n_vocab as i32)
            .filter(|&t| model.token_bytes(t).contains(&b'\n'))
            .collect();
        let text = serde_json::to_string(&serde_json::json!({
            "max_new_tokens": max_new,
            "newline_tokens": newline_tokens,
            "layers": layers,
            "prompts": prompts,
        }))?;
        std::fs::write(path, text)?;
    }
    // The attention path as `engine report` decides it.
    let plan = info.plan_attention(args.model.runtime.flash_attn)?;
    let mut base = args.model.runtime.context_options();
    base.flash_attention = plan.flash_attention;
    base.attention_path = Some(plan.path);
    let options = crate::study::context_for(&experiment, &tokenized, &model, base.clone())?;
    say!(
        "pipeline on {} prompts ({} tokens, {} answer tokens each), {} layers; model load {:.1} s",
        experiment.prompts.len(),
        total_tokens,
        max_new,
        layers.len(),
        load.as_secs_f64()
    )?;

    // llama.cpp alone: forward pass and greedy answer, no callback.
    let mut bare = Session::new(
        &model,
        ContextOptions {
            with_callback: false,
            ..options.clone()
        },
    )?;
    // The answers in the same batches as the pipeline's; each answer is
    // also generated alone, right after its capture, to time both ways.
    let mut bare_answers = crate::study::answer_context(&bare, &experiment, &tokenized)?;
    let newline = |token: i32| model.token_bytes(token).contains(&b'\n');
    let (mut t_forward, mut t_alone, mut t_batched) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut answer_tokens, mut differing) = (0, 0);
    for batch in crate::study::answer_batches(&experiment) {
        let mut alone = Vec::with_capacity(batch.len());
        for &p in &batch {
            let started = Instant::now();
            bare.capture(&tokenized.tokens[p], &CaptureRequest::default())?;
            t_forward += started.elapsed();
            if let Some(answers) = bare_answers.as_mut() {
                let started = Instant::now();
                answers.push(&bare)?;
                t_batched += started.elapsed();
            }
            let started = Instant::now();
            alone.push(bare.continue_greedy_until(max_new, newline)?.tokens);
            t_alone += started.elapsed();
        }
        answer_tokens += alone.iter().map(Vec::len).sum::<usize>();
        if let Some(answers) = bare_answers.as_mut() {
            let started = Instant::now();
            let batched = answers.generate(max_new, newline)?;
            t_batched += started.elapsed();
            differing += batched
                .iter()
                .zip(&alone)
                .filter(|(a, b)| &a.tokens != *b)
                .count();
        }
    }
    let batched = bare_answers.is_some();
    let t_bare = t_forward + if batched { t_batched } else { t_alone };
    drop(bare_answers);
    drop(bare);
    let peak_bare = peak_rss_bytes();

    // The pipeline: capture, analyses, bundle and report.
    let capture = |experiment: &crate::experiment::Experiment| -> anyhow::Result<_> {
        let mut session = Session::new(&model, options.clone())?;
        let mut answers = crate::study::answer_context(&session, experiment, &tokenized)?;
        let started = Instant::now();
        let mut order = Vec::with_capacity(experiment.prompts.len());
        let mut records = Vec::with_capacity(experiment.prompts.len());
        for batch in crate::study::answer_batches(experiment) {
            records.extend(crate::study::capture_batch(
                &mut session,
                answers.as_mut(),
                experiment,
                &tokenized,
                &batch,
                &layers,
            )?);
            order.extend(batch);
        }
        records.sort_by_key(|r| r.prompt);
        let tokens_run = crate::study::tokens_to_run(experiment, &tokenized, &order);
        Ok((records, started.elapsed(), tokens_run))
    };
    let (records, t_capture, tokens_run) = capture(&experiment)?;
    // With shared prefixes, the same capture with every prompt run whole.
    let t_whole = if tokens_run < total_tokens {
        let mut whole = experiment.clone();
        whole.file.capture.reuse_prefix = false;
        Some(capture(&whole)?.1)
    } else {
        None
    };
    // The patching stage, as `engine report` runs it (through a scratch
    // cache), and once more without greedy answers, to show what they cost.
    let scratch =
        std::env::temp_dir().join(format!("engine-bench-patching-{}", std::process::id()));
    let patch = |experiment: &crate::experiment::Experiment| -> anyhow::Result<_> {
        let _ = std::fs::remove_dir_all(&scratch);
        let cache = crate::study::cache::PromptCache::open(&scratch, "bench")?;
        let settings = crate::study::cache::CaptureSettings {
            flash_attention: format!("{:?}", options.flash_attention).to_lowercase(),
            n_gpu_layers: args.model.runtime.n_gpu_layers,
        };
        let patch_cache = crate::study::patching::PatchCache {
            cache: &cache,
            model_sha256: "bench",
            settings: &settings,
        };
        let context = crate::study::patching::PatchingContext {
            threads: options.threads,
            flash_attention: options.flash_attention,
        };
        let started = Instant::now();
        let done = crate::study::patching::patch_model(
            experiment,
            &records,
            info.n_layer,
            info.n_embd,
            &patch_cache,
            context,
            Some((&model, &tokenized)),
            None,
        )?;
        Ok((done, started.elapsed()))
    };
    let patching = if experiment.file.patching.enabled {
        let (done, t_patch) = patch(&experiment)?;
        let mut no_greedy = experiment.clone();
        no_greedy.file.patching.greedy_stride = 0;
        let (_, t_logprobs) = patch(&no_greedy)?;
        let _ = std::fs::remove_dir_all(&scratch);
        Some((done, t_patch, t_logprobs))
    } else {
        None
    };
    let run = crate::study::ModelRun {
        name: "bench".into(),
        sha256: String::new(),
        info: info.clone(),
        layers,
        records,
        capture_seconds: t_capture.as_secs_f64(),
        patching: patching.as_ref().and_then(|p| p.0.clone()),
        attention: plan.clone(),
        chat,
    };
    let started = Instant::now();
    let results = crate::study::analyze(&experiment, std::slice::from_ref(&run))?;
    let t_analyses = started.elapsed();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data"))?;
    results.write(&dir.join("data"))?;
    let bundle = crate::report::build_bundle(
        &experiment,
        std::slice::from_ref(&run),
        &results,
        &crate::report::Provenance::current(),
    )?;
    crate::report::write_bundle(&dir.join(viewer::bundle::FILE_NAME), &bundle)?;
    crate::report::render_report(&dir, &bundle, &crate::report::RenderOptions::default())?;
    let t_publish = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let peak = peak_rss_bytes();

    let s = |d: Duration| d.as_secs_f64();
    let t_patching = patching.as_ref().map_or(Duration::ZERO, |p| p.1);
    let total = t_capture + t_patching + t_analyses + t_publish;
    say!(
        "  llama.cpp alone (forward + answer)   {:>7.1} s",
        s(t_bare)
    )?;
    say!(
        "    of which the {answer_tokens} answer tokens: {:.1} s{}",
        s(if batched { t_batched } else { t_alone }),
        if batched {
            format!(
                " in batches of {}; {:.1} s one by one ({:.2}×), {differing} of {} answers not the same",
                experiment.file.capture.answer_batch,
                s(t_alone),
                s(t_alone) / s(t_batched),
                experiment.prompts.len()
            )
        } else {
            " one by one".to_string()
        }
    )?;
    say!(
        "  capture (forward + capture + answer) {:>7.1} s  ({:.3}× llama.cpp alone)",
        s(t_capture),
        s(t_capture) / s(t_bare)
    )?;
    if let Some(t_whole) = t_whole {
        say!(
            "    kept prefixes: llama.cpp ran {tokens_run} of the {total_tokens} prompt tokens ({:.0}%)",
            100.0 * tokens_run as f64 / total_tokens as f64
        )?;
        say!(
            "  capture, every prompt whole          {:>7.1} s  ({:.3}× llama.cpp alone; kept prefixes {:.2}× faster)",
            s(t_whole),
            s(t_whole) / s(t_bare),
            s(t_whole) / s(t_capture)
        )?;
    }
    if let Some((done, t_patch, t_logprobs)) = &patching {
        let options = &experiment.file.patching;
        let targets: usize = done
            .as_ref()
            .map_or(0, |d| d.tasks.iter().map(|t| t.targets.len()).sum());
        let n_layers = done
            .as_ref()
            .and_then(|d| d.tasks.first())
            .map_or(0, |t| t.layers.len());
        let methods = options.methods.len() * if options.controls { 2 } else { 1 };
        let runs = done.as_ref().map_or(0, |d| d.runs);
        say!(
            "  patching ({targets} targets × {n_layers} layers × {methods} methods and controls = {runs} runs)\n                                       {:>7.1} s  ({:.2}× the capture; the run with patching {:.2}× the run without)",
            s(*t_patch),
            s(*t_patch) / s(t_capture),
            s(total) / s(total - *t_patch)
        )?;
        say!(
            "    of which log-probabilities alone   {:>7.1} s; greedy answers at every {} layer(s) {:.1} s more",
            s(*t_logprobs),
            options.greedy_stride,
            s(*t_patch) - s(*t_logprobs)
        )?;
    }
    say!(
        "  analyses                             {:>7.1} s",
        s(t_analyses)
    )?;
    say!(
        "  bundle and report                    {:>7.1} s",
        s(t_publish)
    )?;
    say!(
        "  total                                {:>7.1} s  ({:.3}× llama.cpp alone; {:.2} prompts/s)",
        s(total),
        s(total) / s(t_bare),
        experiment.prompts.len() as f64 / s(total)
    )?;
    say!(
        "peak resident memory: {:.0} MB after llama.cpp alone, {:.0} MB after the pipeline",
        peak_bare as f64 / 1e6,
        peak as f64 / 1e6
    )?;
    Ok(())
}
