//! Which attention path each architecture takes, decided before any prompt
//! runs, and how llama.cpp scores attention in the architectures whose
//! attention the engine recomputes.
//!
//! The recomputed path repeats llama.cpp's arithmetic from the RoPE'd
//! queries and keys (`Qcur-N`, `Kcur-N`); it is exact only where every step
//! between those tensors and the softmax is known. Each architecture listed
//! here as recomputed has a test that compares the two paths on a model of
//! that architecture (`engine/tests/architectures.rs`: real gemma-3-270m
//! and SmolLM2, and tiny random-weight models of the others). Every other
//! architecture reads llama.cpp's own probabilities (`kq_soft_max-N`), which
//! exist only with flash attention off.

use super::llama::FlashAttention;
use super::request::AttentionPath;

/// How one architecture's attention reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchitectureSupport {
    /// The name in the GGUF's `general.architecture`.
    pub architecture: &'static str,
    /// What llama.cpp does between the RoPE'd queries and the softmax, as
    /// the recomputation repeats it (for the README's table).
    pub attention: &'static str,
}

/// The architectures whose attention is recomputed, with what the
/// recomputation repeats. Mistral and Llama-2/3 derivatives (Vicuna, Llama-2-chat, SmolLM2) are `llama`
/// in GGUF files.
pub const RECOMPUTED: &[ArchitectureSupport] = &[
    ArchitectureSupport {
        architecture: "llama",
        attention: "softmax(q·k/√d); grouped-query heads",
    },
    ArchitectureSupport {
        architecture: "qwen2",
        attention: "softmax(q·k/√d); q, k, v biases before RoPE",
    },
    ArchitectureSupport {
        architecture: "qwen3",
        attention: "softmax(q·k/√d); Q/K norms before RoPE",
    },
    ArchitectureSupport {
        architecture: "granite",
        attention: "softmax(q·k·s), s from `granite.attention.scale`",
    },
    ArchitectureSupport {
        architecture: "gemma2",
        attention:
            "softmax(c·tanh((q/√d)·k/c)), c the logit soft-cap; sliding window on every other layer",
    },
    ArchitectureSupport {
        architecture: "gemma3",
        attention: "softmax((q/√d)·k); Q/K norms; sliding window on five layers of six",
    },
];

/// Whether the engine recomputes `architecture`'s attention.
pub fn recomputes(architecture: &str) -> bool {
    RECOMPUTED.iter().any(|a| a.architecture == architecture)
}

/// The attention path and flash-attention setting a model runs with, and
/// why: decided from its architecture before the first prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionPlan {
    pub path: AttentionPath,
    pub flash_attention: FlashAttention,
    /// One sentence for the run's log and the report.
    pub reason: String,
}

/// Why `--flash-attn on` cannot serve an architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--flash-attn on cannot be used with `{architecture}`: the engine reads this architecture's attention from llama.cpp's own probabilities, which exist only with flash attention off (it recomputes attention only for {}); pass --flash-attn auto (the default) or off", recomputed_list())]
pub struct FlashAttentionRefused {
    pub architecture: String,
}

/// The recomputed architectures, comma-separated, for messages.
pub(crate) fn recomputed_list() -> String {
    RECOMPUTED
        .iter()
        .map(|a| a.architecture)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan for a model of `architecture` when the user asked for
/// `flash_attention`: recomputation where it is verified for the
/// architecture (flash attention as asked), else llama.cpp's probabilities
/// with flash attention off; `on` for an architecture without
/// recomputation is refused.
pub fn plan_attention(
    architecture: &str,
    flash_attention: FlashAttention,
) -> Result<AttentionPlan, FlashAttentionRefused> {
    match (recomputes(architecture), flash_attention) {
        (true, FlashAttention::Off) => Ok(AttentionPlan {
            path: AttentionPath::Materialized,
            flash_attention,
            reason: format!(
                "`{architecture}`: llama.cpp's own attention probabilities (flash attention off, as asked)"
            ),
        }),
        (true, _) => Ok(AttentionPlan {
            path: AttentionPath::Recomputed,
            flash_attention,
            reason: format!(
                "`{architecture}`: attention recomputed from the RoPE'd queries and keys (verified for this architecture), flash attention {}",
                match flash_attention {
                    FlashAttention::On => "on",
                    _ => "as llama.cpp chooses",
                }
            ),
        }),
        (false, FlashAttention::On) => Err(FlashAttentionRefused {
            architecture: architecture.to_string(),
        }),
        (false, _) => Ok(AttentionPlan {
            path: AttentionPath::Materialized,
            flash_attention: FlashAttention::Off,
            reason: format!(
                "`{architecture}`: llama.cpp's own attention probabilities, flash attention off (recomputation is verified only for {})",
                recomputed_list()
            ),
        }),
    }
}

/// How llama.cpp turns one layer's RoPE'd queries and keys into attention
/// probabilities, for the recomputed path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttentionRecipe {
    /// A factor on q, in float32, before it is rounded to float16 for the
    /// product with the float16 keys (gemma scales `Qcur` itself).
    pub q_scale: Option<f32>,
    /// The factor on q·k inside the softmax; `None`: 1/√head_dim.
    pub kq_scale: Option<f32>,
    /// Logit soft-capping: scores become c·tanh(score/c) before the softmax.
    pub soft_cap: Option<f32>,
    /// Sliding-window attention: a query at position p sees keys at
    /// positions j with p − j < `window` in the layers marked true.
    pub sliding_window: Option<SlidingWindow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlidingWindow {
    pub window: usize,
    pub layers: Vec<bool>,
}

impl SlidingWindow {
    /// Whether layer `il` attends through the window.
    pub(crate) fn applies_to(&self, il: usize) -> bool {
        self.layers.get(il).copied().unwrap_or(false)
    }
}

/// What the recipe reads of a model.
pub(crate) struct RecipeInputs<'a> {
    pub architecture: &'a str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// The GGUF metadata value of a key, as llama.cpp prints it.
    pub meta: &'a dyn Fn(&str) -> Option<String>,
}

/// The recipe of an architecture the engine recomputes, from the model's
/// metadata as llama.cpp reads it (its `load_arch_hparams`); `None` for
/// the others.
pub(crate) fn attention_recipe(m: &RecipeInputs<'_>) -> Option<AttentionRecipe> {
    let arch = m.architecture;
    let number = |key: &str| -> Option<f32> {
        (m.meta)(&format!("{arch}.{key}")).and_then(|s| s.trim().parse::<f32>().ok())
    };
    let head_dim_k = number("attention.key_length")
        .map(|d| d as usize)
        .unwrap_or(m.n_embd / m.n_head.max(1));
    match arch {
        "llama" | "qwen2" | "qwen3" => Some(AttentionRecipe {
            q_scale: None,
            kq_scale: None,
            soft_cap: None,
            sliding_window: None,
        }),
        // llama.cpp reads the scale only for granite; 0 means 1/√d.
        "granite" => Some(AttentionRecipe {
            q_scale: None,
            kq_scale: number("attention.scale").filter(|&s| s != 0.0),
            soft_cap: None,
            sliding_window: None,
        }),
        "gemma2" | "gemma3" => {
            // The 27B models scale by the width per head, the others by
            // the key length (llama.cpp recognises 27B by its depth).
            let is_27b = (arch, m.n_layer) == ("gemma2", 46) || (arch, m.n_layer) == ("gemma3", 62);
            let per_head = if is_27b {
                m.n_embd / m.n_head.max(1)
            } else {
                head_dim_k
            };
            let q_scale = 1.0 / (per_head as f32).sqrt();
            let (default_window, default_pattern) = if arch == "gemma2" {
                (Some(4096), 2)
            } else {
                (None, 6)
            };
            let window = number("attention.sliding_window")
                .map(|w| w as usize)
                .or(default_window)
                .filter(|&w| w > 0);
            let sliding_window = match window {
                None => None,
                Some(window) => Some(SlidingWindow {
                    window,
                    layers: sliding_layers(
                        (m.meta)(&format!("{arch}.attention.sliding_window_pattern")).as_deref(),
                        default_pattern,
                        m.n_layer,
                    )?,
                }),
            };
            let soft_cap = if arch == "gemma2" {
                Some(number("attn_logit_softcapping").unwrap_or(50.0))
            } else {
                None
            };
            Some(AttentionRecipe {
                q_scale: Some(q_scale),
                kq_scale: Some(1.0),
                soft_cap,
                sliding_window,
            })
        }
        _ => None,
    }
}

/// Which layers slide, as llama.cpp's `set_swa_pattern` decides: with a
/// pattern n, every layer but each n-th (`il % n < n − 1`); n = 0 makes
/// every layer slide. A per-layer array in the metadata is taken as it is.
/// `None` when the metadata holds something else.
fn sliding_layers(meta: Option<&str>, default_pattern: usize, n_layer: usize) -> Option<Vec<bool>> {
    let pattern = match meta.map(str::trim) {
        None => default_pattern,
        Some(text) if text.starts_with('[') => {
            let flags: Option<Vec<bool>> = text
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|v| match v.trim() {
                    "true" | "1" => Some(true),
                    "false" | "0" => Some(false),
                    _ => None,
                })
                .collect();
            return flags.filter(|f| f.len() == n_layer);
        }
        Some(text) => text.parse().ok()?,
    };
    Some(
        (0..n_layer)
            .map(|il| pattern == 0 || il % pattern < pattern - 1)
            .collect(),
    )
}

/// The README's table of architectures, as the engine decides them.
pub fn architecture_table() -> String {
    let mut table = String::from("| Architecture (`general.architecture`) | Attention | What the recomputation repeats |\n|---|---|---|\n");
    for a in RECOMPUTED {
        table.push_str(&format!(
            "| `{}` | recomputed from Q and K; flash attention as you choose | {} |\n",
            a.architecture, a.attention
        ));
    }
    table.push_str("| any other architecture llama.cpp runs | llama.cpp's own probabilities; flash attention turned off | — |\n");
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unverified_architecture_reads_llama_cpp_probabilities_with_flash_attention_off() {
        let plan = plan_attention("phi3", FlashAttention::Auto).expect("plan");
        assert_eq!(plan.path, AttentionPath::Materialized);
        assert_eq!(plan.flash_attention, FlashAttention::Off);
        assert!(
            plan.reason.contains("verified only for llama"),
            "{}",
            plan.reason
        );
        let refused = plan_attention("phi3", FlashAttention::On).expect_err("refused");
        assert!(refused
            .to_string()
            .contains("--flash-attn on cannot be used with `phi3`"));
    }

    #[test]
    fn a_verified_architecture_is_recomputed_unless_flash_attention_is_off() {
        for arch in ["llama", "gemma3"] {
            let auto = plan_attention(arch, FlashAttention::Auto).expect("plan");
            assert_eq!(
                (auto.path, auto.flash_attention),
                (AttentionPath::Recomputed, FlashAttention::Auto)
            );
            let off = plan_attention(arch, FlashAttention::Off).expect("plan");
            assert_eq!(off.path, AttentionPath::Materialized);
        }
    }

    #[test]
    fn sliding_layers_follow_llama_cpp_patterns() {
        assert_eq!(
            sliding_layers(None, 6, 7),
            Some(vec![true, true, true, true, true, false, true])
        );
        assert_eq!(
            sliding_layers(Some("2"), 6, 3),
            Some(vec![true, false, true])
        );
        assert_eq!(sliding_layers(Some("0"), 6, 2), Some(vec![true, true]));
        assert_eq!(
            sliding_layers(Some("[true, false]"), 6, 2),
            Some(vec![true, false])
        );
        assert_eq!(sliding_layers(Some("[true]"), 6, 2), None);
        assert_eq!(sliding_layers(Some("wide"), 6, 2), None);
    }

    #[test]
    fn gemma_scales_queries_and_caps_logits_as_llama_cpp_does() {
        let meta = |key: &str| match key {
            "gemma2.attention.key_length" => Some("256".to_string()),
            "gemma2.attn_logit_softcapping" => Some("50.000000".to_string()),
            "gemma2.attention.sliding_window" => Some("4096".to_string()),
            _ => None,
        };
        let recipe = attention_recipe(&RecipeInputs {
            architecture: "gemma2",
            n_layer: 26,
            n_embd: 2304,
            n_head: 8,
            meta: &meta,
        })
        .expect("gemma2 is recomputed");
        assert_eq!(recipe.q_scale, Some(1.0 / 16.0));
        assert_eq!(recipe.kq_scale, Some(1.0));
        assert_eq!(recipe.soft_cap, Some(50.0));
        let window = recipe.sliding_window.expect("window");
        assert_eq!(window.window, 4096);
        assert!(window.applies_to(0) && !window.applies_to(1));
    }
}
