//! The capture on the real default model (SmolLM2-135M-Instruct, Q4_1).
//! Fetch it first with `bash scripts/fetch-model.sh`.

use std::sync::OnceLock;

use engine::capture::{
    Activations, AttentionKeep, AttentionPath, AttentionRequest, CaptureRequest, ContextOptions,
    FlashAttention, HiddenRequest, Model, ModelOptions, Pooling, Session,
};

/// Largest difference allowed between attention read from llama.cpp's softmax
/// (flash attention off) and recomputed from its RoPE'd queries and keys.
/// Both round q and k to float16 (the KV cache type) and differ only in the
/// order of float32 accumulation in the dot product and the softmax sum;
/// measured here: 5.5e-7. The margin covers other SIMD widths.
const RECOMPUTED_ATTENTION_TOLERANCE: f32 = 1e-5;

/// Attention rows sum to one up to float32 rounding of a softmax over at most
/// a few hundred keys.
const ROW_SUM_TOLERANCE: f32 = 1e-5;

const PARIS_PROMPT: &str = "The capital of France is";
const STORY: &str =
    "Hannah is reading a book in the garden. Max is cooking dinner for his family. \
                     Question: What is Hannah doing? Answer:";

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
        Model::load(&ModelOptions {
            path,
            n_gpu_layers: 0,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn session(flash: FlashAttention) -> Session<'static> {
    let options = ContextOptions {
        n_ctx: 512,
        threads: 2,
        flash_attention: flash,
        ..ContextOptions::default()
    };
    Session::new(model(), options).expect("create a context")
}

fn everything(n_tokens: usize) -> CaptureRequest {
    CaptureRequest {
        hidden: HiddenRequest::All,
        attention: Some(AttentionRequest {
            queries: (0..n_tokens).collect(),
            keep: AttentionKeep::Rows,
        }),
        final_norm: true,
        all_logits: false,
    }
}

fn capture_everything(session: &mut Session<'_>, text: &str) -> Activations {
    let tokens = model().tokenize(text, false).expect("tokenize");
    session
        .capture(&tokens, &everything(tokens.len()))
        .expect("capture")
}

#[test]
fn the_capital_of_france_is_paris() {
    let mut s = session(FlashAttention::Auto);
    let a = s
        .capture_text(PARIS_PROMPT, &CaptureRequest::default())
        .expect("capture");
    let (top, _) = a.top_next(1)[0];
    assert_eq!(model().token_text(top), " Paris");
    // The answer is generated from the captured prompt's cache.
    let generated = s.continue_greedy(1).expect("generate");
    assert_eq!(model().detokenize(&generated), " Paris");
}

#[test]
fn every_layer_is_captured_with_the_right_shapes() {
    let info = model().info();
    assert_eq!(
        (
            info.n_layer,
            info.n_embd,
            info.n_head,
            info.architecture.as_str()
        ),
        (30, 576, 9, "llama")
    );
    let mut s = session(FlashAttention::Off);
    let a = capture_everything(&mut s, PARIS_PROMPT);
    let t = a.tokens.len();
    assert_eq!(t, 5, "SmolLM2 adds no BOS token");
    assert_eq!(a.hidden.as_ref().expect("hidden").shape, vec![30, t, 576]);
    assert_eq!(
        a.attention.as_ref().expect("attention").shape,
        vec![30, 9, t, t]
    );
    assert_eq!(
        a.final_norm.as_ref().expect("final norm").shape,
        vec![t, 576]
    );
    assert_eq!(a.logits_last.len(), info.n_vocab);
    let hidden = a.hidden.expect("hidden");
    for layer in 0..30 {
        let row = hidden.row(&[layer, t - 1]);
        assert!(
            row.iter().all(|x| x.is_finite()) && row.iter().any(|&x| x != 0.0),
            "layer {layer} is filled"
        );
    }
}

#[test]
fn attention_rows_sum_to_one_over_the_causal_prefix_and_are_zero_after() {
    for flash in [FlashAttention::Off, FlashAttention::On] {
        let mut s = session(flash);
        let a = capture_everything(&mut s, STORY);
        let att = a.attention.expect("attention");
        let t = a.tokens.len();
        for layer in 0..30 {
            for head in 0..9 {
                for q in 0..t {
                    let row = att.row(&[layer, head, q]);
                    let sum: f32 = row[..=q].iter().sum();
                    assert!(
                        (sum - 1.0).abs() < ROW_SUM_TOLERANCE,
                        "{flash:?} layer {layer} head {head} row {q} sums to {sum}"
                    );
                    assert!(row[..=q].iter().all(|&p| p >= 0.0));
                    assert!(
                        row[q + 1..].iter().all(|&p| p == 0.0),
                        "{flash:?}: row {q} attends to the future"
                    );
                }
            }
        }
    }
}

#[test]
fn recomputed_attention_matches_llama_cpp_softmax() {
    // Same forward pass (flash attention off), two ways to get attention.
    let mut materialized = session(FlashAttention::Off);
    assert_eq!(materialized.attention_path(), AttentionPath::Materialized);
    let options = ContextOptions {
        n_ctx: 512,
        threads: 2,
        flash_attention: FlashAttention::Off,
        attention_path: Some(AttentionPath::Recomputed),
        ..ContextOptions::default()
    };
    let mut recomputed = Session::new(model(), options).expect("context");
    let a = capture_everything(&mut materialized, STORY)
        .attention
        .expect("attention");
    let b = capture_everything(&mut recomputed, STORY)
        .attention
        .expect("attention");
    assert_eq!(a.shape, b.shape);
    let max_diff = max_abs_diff(&a.data, &b.data);
    eprintln!(
        "max |materialized - recomputed| = {max_diff:e} over {} probabilities",
        a.data.len()
    );
    assert!(
        max_diff <= RECOMPUTED_ATTENTION_TOLERANCE,
        "max difference {max_diff:e}"
    );

    // With flash attention on, the forward pass itself rounds differently
    // from layer 1 on; layer 0 sees the same queries and keys.
    let c = capture_everything(&mut session(FlashAttention::On), STORY)
        .attention
        .expect("attention");
    let per_layer = a.data.len() / 30;
    assert!(
        max_abs_diff(&a.data[..per_layer], &c.data[..per_layer]) <= RECOMPUTED_ATTENTION_TOLERANCE
    );
    let worst = (1..30)
        .map(|l| {
            max_abs_diff(
                &a.data[l * per_layer..(l + 1) * per_layer],
                &c.data[l * per_layer..(l + 1) * per_layer],
            )
        })
        .fold(0.0f32, f32::max);
    eprintln!("flash attention on vs off, layers 1-29: max attention difference {worst:e}");
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn final_norm_equals_llama_cpp_embeddings_output() {
    let options = ContextOptions {
        n_ctx: 256,
        threads: 2,
        embeddings: true,
        ..ContextOptions::default()
    };
    let mut s = Session::new(model(), options).expect("context");
    let request = CaptureRequest {
        final_norm: true,
        ..CaptureRequest::default()
    };
    let a = s.capture_text(STORY, &request).expect("capture");
    let final_norm = a.final_norm.expect("final norm");
    for i in 0..a.tokens.len() {
        let theirs = s.llama_embeddings(i).expect("llama.cpp embeddings");
        assert_eq!(
            final_norm.row(&[i]),
            theirs.as_slice(),
            "token {i}: bit-identical"
        );
    }
}

#[test]
fn reusing_one_context_gives_the_same_numbers_as_fresh_contexts() {
    let prompts = [
        STORY,
        PARIS_PROMPT,
        "x = 3, y = 11\nx = 5, y = 17\nx = 7, y =",
    ];
    let mut reused = session(FlashAttention::Off);
    for prompt in prompts {
        let from_reused = capture_everything(&mut reused, prompt);
        let from_fresh = capture_everything(&mut session(FlashAttention::Off), prompt);
        assert!(
            from_reused == from_fresh,
            "prompt {prompt:?} differs after reuse"
        );
    }
}

#[test]
fn reductions_inside_the_callback_match_the_full_capture() {
    let tokens = model().tokenize(STORY, false).expect("tokenize");
    let t = tokens.len();
    let mut s = session(FlashAttention::Off);
    let full = s.capture(&tokens, &everything(t)).expect("full capture");
    let pools = vec![
        Pooling::Token(t - 1),
        Pooling::Mean(2..9),
        Pooling::Max(10..t),
    ];
    let spans = vec![0..9, 9..18, 3..3];
    let queries = vec![t - 1, 12];
    let reduced_request = CaptureRequest {
        hidden: HiddenRequest::Pooled(pools.clone()),
        attention: Some(AttentionRequest {
            queries: queries.clone(),
            keep: AttentionKeep::SpanMass(spans.clone()),
        }),
        final_norm: false,
        all_logits: false,
    };
    let reduced = s
        .capture(&tokens, &reduced_request)
        .expect("reduced capture");
    let hidden = full.hidden.expect("hidden");
    let pooled = reduced.hidden.expect("pooled");
    assert_eq!(pooled.shape, vec![3, 30, 576]);
    for (k, pool) in pools.iter().enumerate() {
        for layer in 0..30 {
            let rows: Vec<f32> = pool
                .positions()
                .flat_map(|p| hidden.row(&[layer, p]).to_vec())
                .collect();
            let expected = reference_pool(pool, &rows, 576);
            // The last block computes only the rows marked as outputs; the
            // matmuls then see fewer rows, which may change float rounding.
            let tolerance = if layer == 29 { 1e-3 } else { 0.0 };
            let diff = expected
                .iter()
                .zip(pooled.row(&[k, layer]))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= tolerance,
                "pool {pool:?} layer {layer}: max difference {diff:e}"
            );
        }
    }
    let rows = full.attention.expect("attention rows");
    let mass = reduced.attention.expect("span mass");
    assert_eq!(mass.shape, vec![30, 9, 2, 3]);
    for layer in 0..30 {
        for head in 0..9 {
            for (qi, &q) in queries.iter().enumerate() {
                for (si, span) in spans.iter().enumerate() {
                    let expected: f64 = rows.row(&[layer, head, q])[span.clone()]
                        .iter()
                        .map(|&p| f64::from(p))
                        .sum();
                    assert_eq!(mass.get(&[layer, head, qi, si]), expected as f32);
                }
            }
        }
    }
}

/// Pooling written out independently of the engine's.
fn reference_pool(pool: &Pooling, rows: &[f32], width: usize) -> Vec<f32> {
    let n = rows.len() / width;
    (0..width)
        .map(|j| {
            let column = (0..n).map(|r| rows[r * width + j]);
            match pool {
                Pooling::Token(_) => rows[j],
                Pooling::Mean(_) => (column.map(f64::from).sum::<f64>() / n as f64) as f32,
                Pooling::Max(_) => column.fold(f32::NEG_INFINITY, f32::max),
            }
        })
        .collect()
}

/// With flash attention off, a prompt run as a kept prefix plus its own
/// tokens gives the numbers of the prompt run whole: every row of a matrix
/// product is computed alike whatever the batch (measured: exactly 0). The
/// margin covers backends that tile by shape.
const PREFIX_SPLIT_TOLERANCE: f32 = 1e-5;

/// With flash attention on, llama.cpp's CPU kernel rounds queries to float16
/// and accumulates by blocks of keys, so splitting a prompt moves its numbers
/// by about as much as flash attention itself does (measured, split vs
/// flash on/off: hidden 2.1 vs 4.6 on features of a few hundred, attention
/// 0.055 vs 0.043, logits 0.50 vs 0.79). The split may move them at most this
/// many times as far as switching flash attention off moves the whole prompt.
const PREFIX_SPLIT_VS_FLASH_ROUNDING: f32 = 2.0;

const DEMONSTRATIONS: &str = "Each example lists points on one line. Give y for the last x.\n\n\
    x = 0, y = 3\nx = 7, y = 17\nx = 8, y = 19\nx = 3, y = 9\n\n\
    x = 1, y = 5\nx = 2, y = 7\nx = 5, y = 13\nx = 9, y = 21\n\n";

/// The largest difference of two captures: hidden states (all pools and
/// layers), attention probabilities, next-token logits.
fn capture_distance(a: &Activations, b: &Activations) -> [f32; 3] {
    let hidden = max_abs_diff(
        &a.hidden.as_ref().expect("hidden states").data,
        &b.hidden.as_ref().expect("hidden states").data,
    );
    let attention = max_abs_diff(
        &a.attention.as_ref().expect("attention").data,
        &b.attention.as_ref().expect("attention").data,
    );
    [
        hidden,
        attention,
        max_abs_diff(&a.logits_last, &b.logits_last),
    ]
}

#[test]
fn a_kept_prefix_gives_the_same_numbers_as_running_it_again_and_as_the_whole_prompt() {
    let a_text = format!("{DEMONSTRATIONS}x = 0, y = 3\nx = 5, y = 8\nx = 8, y = 11\nx = 2, y =");
    let b_text = format!("{DEMONSTRATIONS}x = 4, y = 13\nx = 1, y = 7\nx = 6, y = 17\nx = 3, y =");
    let a = model().tokenize(&a_text, false).expect("tokenize");
    let b = model().tokenize(&b_text, false).expect("tokenize");
    let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    assert!(shared > 60, "the prompts share {shared} tokens");
    let n = b.len();
    let request = CaptureRequest {
        hidden: HiddenRequest::Pooled(vec![Pooling::Token(n - 1), Pooling::Mean(shared..n)]),
        attention: Some(AttentionRequest {
            // Rows over every key, the prefix's included.
            queries: vec![shared + 2, n - 1],
            keep: AttentionKeep::Rows,
        }),
        final_norm: false,
        all_logits: false,
    };
    let request_a = CaptureRequest {
        hidden: HiddenRequest::Pooled(vec![Pooling::Token(a.len() - 1)]),
        ..CaptureRequest::default()
    };
    let whole_off = session(FlashAttention::Off)
        .capture(&b, &request)
        .expect("capture whole");
    for flash in [FlashAttention::Off, FlashAttention::On] {
        // B after A: the prefix A ran is kept and only B's own tokens run.
        let mut warm = session(flash);
        warm.capture_after_prefix(&a, shared, &request_a)
            .expect("capture A");
        assert!(warm.holds_prefix(&b[..shared]));
        let reused = warm
            .capture_after_prefix(&b, shared, &request)
            .expect("capture B reusing the prefix");
        let reused_answer = warm.continue_greedy(4).expect("generate");
        // B alone: the prefix runs now, then B's own tokens.
        let mut cold = session(flash);
        let fresh = cold
            .capture_after_prefix(&b, shared, &request)
            .expect("capture B");
        assert!(
            reused == fresh,
            "{flash:?}: reusing the prefix changed the numbers"
        );
        assert_eq!(reused_answer, cold.continue_greedy(4).expect("generate"));
        // Rows still sum to one over the whole causal prefix.
        let rows = reused.attention.as_ref().expect("attention");
        for layer in 0..30 {
            for head in 0..9 {
                let sum: f32 = rows.row(&[layer, head, 1]).iter().sum();
                assert!((sum - 1.0).abs() < ROW_SUM_TOLERANCE);
            }
        }

        // The whole prompt in one decode.
        let whole = session(flash).capture(&b, &request).expect("capture whole");
        let split = capture_distance(&reused, &whole);
        eprintln!("{flash:?}: kept prefix vs whole prompt (hidden, attention, logits): {split:?}");
        match flash {
            FlashAttention::Off => assert!(
                split.iter().all(|&d| d <= PREFIX_SPLIT_TOLERANCE),
                "{split:?}"
            ),
            _ => {
                let rounding = capture_distance(&whole, &whole_off);
                eprintln!("  flash attention on vs off, whole prompt: {rounding:?}");
                for (d, r) in split.iter().zip(rounding) {
                    assert!(
                        *d <= PREFIX_SPLIT_VS_FLASH_ROUNDING * r,
                        "{split:?} vs {rounding:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_request_that_reads_the_prefix_is_refused() {
    let tokens = model().tokenize(STORY, false).expect("tokenize");
    let request = CaptureRequest {
        hidden: HiddenRequest::Pooled(vec![Pooling::Mean(0..tokens.len())]),
        ..CaptureRequest::default()
    };
    let err = session(FlashAttention::Auto)
        .capture_after_prefix(&tokens, 5, &request)
        .expect_err("the pooling reads prefix tokens");
    assert!(err.to_string().contains("prefix"), "{err}");
}
