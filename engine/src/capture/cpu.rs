//! A guard against running llama.cpp code the CPU cannot execute.
//!
//! llama.cpp is compiled for a fixed set of x86 extensions (AVX2 by default;
//! AVX-512 when built with `GGML_AVX512=ON`, see the README). Run on a CPU
//! without one of them, it dies with SIGILL mid-computation. We compare the
//! compiled features (from llama.cpp's system info) with what the CPU reports
//! and refuse with a clear message instead.

/// Compiled features llama.cpp reports, with the name `std` detects them by.
#[cfg(target_arch = "x86_64")]
fn detected(feature: &str) -> Option<bool> {
    Some(match feature {
        "SSE3" => std::arch::is_x86_feature_detected!("sse3"),
        "SSSE3" => std::arch::is_x86_feature_detected!("ssse3"),
        "AVX" => std::arch::is_x86_feature_detected!("avx"),
        "AVX2" => std::arch::is_x86_feature_detected!("avx2"),
        "F16C" => std::arch::is_x86_feature_detected!("f16c"),
        "FMA" => std::arch::is_x86_feature_detected!("fma"),
        "BMI2" => std::arch::is_x86_feature_detected!("bmi2"),
        "AVX512" => std::arch::is_x86_feature_detected!("avx512f"),
        "AVX512_VBMI" => std::arch::is_x86_feature_detected!("avx512vbmi"),
        "AVX512_VNNI" => std::arch::is_x86_feature_detected!("avx512vnni"),
        "AVX512_BF16" => std::arch::is_x86_feature_detected!("avx512bf16"),
        _ => return None,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_feature: &str) -> Option<bool> {
    None
}

/// The CPU features llama.cpp was compiled with, from its system info line
/// (`CPU : SSE3 = 1 | AVX = 1 | ...`).
pub(crate) fn compiled_features(system_info: &str) -> Vec<String> {
    system_info
        .split('|')
        .filter_map(|part| {
            let (name, value) = part.rsplit_once('=')?;
            let name = name.trim().trim_start_matches("CPU :").trim();
            (value.trim() == "1").then(|| name.to_string())
        })
        .collect()
}

/// The compiled features this CPU lacks (empty when all is well).
pub(crate) fn missing_features(system_info: &str) -> Vec<String> {
    compiled_features(system_info)
        .into_iter()
        .filter(|f| detected(f) == Some(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str =
        "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | LLAMAFILE = 1 | REPACK = 1 |";

    #[test]
    fn compiled_features_are_read_from_the_system_info() {
        assert_eq!(
            compiled_features(INFO),
            [
                "SSE3",
                "AVX2",
                "AVX512",
                "AVX512_VNNI",
                "LLAMAFILE",
                "REPACK"
            ]
        );
    }

    #[test]
    fn this_build_runs_on_this_cpu() {
        assert_eq!(
            missing_features(&crate::capture::llama_build_info()),
            Vec::<String>::new()
        );
    }
}
