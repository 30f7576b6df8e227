//! ICL patching: how much of the k-shot improvement putting the in-context
//! state back recovers (our addition to the design of arXiv 2310.00313, after
//! Hendel et al. 2023, "In-Context Learning Creates Task Vectors", and Todd et
//! al., "Function Vectors in Large Language Models").
//!
//! For one method and layer, each target has three values of a behaviour
//! measure m (the teacher-forced log-probability of its correct answer, or
//! its scored greedy answer): m₀ in its unpatched 0-shot run, m_p in the
//! patched 0-shot run and m_k in its k-shot run. The **recovered fraction**
//! is a ratio of means over the targets where all three are finite:
//!
//! ```text
//!   f = (mean m_p − mean m₀) / (mean m_k − mean m₀)
//! ```
//!
//! 0 means the patch recovers none of the k-shot improvement, 1 all of it;
//! it is orientation-free (an error that falls and a probability that rises
//! both give positive fractions). Per-target fractions are not averaged:
//! they are undefined where a target's own gain is zero, and the ratio of
//! means weights targets by their gain. The fraction itself is unstable when
//! the mean gain is small, so the raw means are returned beside it. The
//! interval is a percentile bootstrap over targets (the same resamples of
//! targets for the numerator and the denominator).
//!
//! Also here: the task vector (the leave-one-out mean of k-shot − 0-shot
//! states) and its random control, both pure functions of the states.

use super::resample::SeededRng;
use super::stats::percentile_interval;

/// The recovered fraction of one method, measure and layer over targets,
/// with its interval and the raw means: the viewer's type, so that the
/// engine's numbers and the browser's recomputation are one definition.
pub use viewer::view::Recovery;

/// The six numbers of a [`Recovery`] in the order of the bundle's
/// `patching_recovery` (`viewer::bundle::RECOVERY_FIELDS`).
pub fn recovery_fields(r: &Recovery) -> [f64; 6] {
    [
        r.fraction,
        r.ci_low,
        r.ci_high,
        r.mean_patched,
        r.mean_zero_shot,
        r.mean_k_shot,
    ]
}

/// The indices of the targets with all three values finite.
fn complete_targets(patched: &[f64], zero_shot: &[f64], k_shot: &[f64]) -> Vec<usize> {
    (0..patched.len().min(zero_shot.len()).min(k_shot.len()))
        .filter(|&i| patched[i].is_finite() && zero_shot[i].is_finite() && k_shot[i].is_finite())
        .collect()
}

/// The recovered fraction (see the module doc) of `patched` between
/// `zero_shot` and `k_shot` (one value per target each), with the
/// percentile interval at `confidence` over the bootstrap `samples` (each
/// a list of indices into the targets with all three values finite, as
/// many as there are such targets). Also returns how many targets count.
pub fn recovered_fraction_with_samples(
    patched: &[f64],
    zero_shot: &[f64],
    k_shot: &[f64],
    samples: &[Vec<usize>],
    confidence: f64,
) -> (Recovery, usize) {
    let kept = complete_targets(patched, zero_shot, k_shot);
    let pick = |values: &[f64], indices: &mut dyn Iterator<Item = usize>| -> Vec<f64> {
        indices.map(|i| values[kept[i]]).collect()
    };
    let point = Recovery::of(
        &pick(patched, &mut (0..kept.len())),
        &pick(zero_shot, &mut (0..kept.len())),
        &pick(k_shot, &mut (0..kept.len())),
    );
    let boot: Vec<f64> = samples
        .iter()
        .filter(|s| !s.is_empty() && s.iter().all(|&i| i < kept.len()))
        .map(|s| {
            Recovery::of(
                &pick(patched, &mut s.iter().copied()),
                &pick(zero_shot, &mut s.iter().copied()),
                &pick(k_shot, &mut s.iter().copied()),
            )
            .fraction
        })
        .collect();
    let (ci_low, ci_high) = if point.fraction.is_finite() {
        percentile_interval(&boot, confidence)
    } else {
        (f64::NAN, f64::NAN)
    };
    (
        Recovery {
            ci_low,
            ci_high,
            ..point
        },
        kept.len(),
    )
}

/// [`recovered_fraction_with_samples`] with `bootstrap` resamples of the
/// targets drawn from `rng`.
pub fn recovered_fraction(
    patched: &[f64],
    zero_shot: &[f64],
    k_shot: &[f64],
    bootstrap: usize,
    confidence: f64,
    rng: &mut SeededRng,
) -> (Recovery, usize) {
    let n = complete_targets(patched, zero_shot, k_shot).len();
    let samples: Vec<Vec<usize>> = (0..bootstrap).map(|_| rng.bootstrap_indices(n)).collect();
    recovered_fraction_with_samples(patched, zero_shot, k_shot, &samples, confidence)
}

/// The task vector of target `target`: the mean over every *other* target u
/// of (k-shot state − 0-shot state), times `scale`, accumulated in f64. The
/// target's own states never enter it. `zero_shot[u]` and `k_shot[u]` are
/// one layer's states (all of one width); `None` when there is no other
/// target.
pub fn leave_one_out_task_vector(
    zero_shot: &[&[f32]],
    k_shot: &[&[f32]],
    target: usize,
    scale: f64,
) -> Option<Vec<f32>> {
    let width = zero_shot.first()?.len();
    let mut sum = vec![0.0f64; width];
    let mut n = 0usize;
    for (u, (z, k)) in zero_shot.iter().zip(k_shot).enumerate() {
        if u == target {
            continue;
        }
        for ((s, &a), &b) in sum.iter_mut().zip(*k).zip(*z) {
            *s += f64::from(a) - f64::from(b);
        }
        n += 1;
    }
    if n == 0 {
        return None;
    }
    Some(
        sum.iter()
            .map(|&s| (scale * (s / n as f64)) as f32)
            .collect(),
    )
}

/// The Euclidean norm, accumulated in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// A random direction (uniform on the sphere: normalised Gaussian draws,
/// Box–Muller) of Euclidean norm `length`, from `rng`: the control that
/// says what any perturbation of the task vector's size does.
pub fn random_vector_of_norm(width: usize, length: f64, rng: &mut SeededRng) -> Vec<f32> {
    let mut draws = Vec::with_capacity(width + 1);
    while draws.len() < width {
        // Two uniforms in (0, 1] from 53 random bits each.
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        draws.push(r * angle.cos());
        draws.push(r * angle.sin());
    }
    draws.truncate(width);
    let current = draws.iter().map(|x| x * x).sum::<f64>().sqrt();
    let factor = if current > 0.0 { length / current } else { 0.0 };
    draws.iter().map(|&x| (x * factor) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_recovery_is_one_and_none_is_zero() {
        let z = [-3.0, -2.0, -4.0];
        let k = [-1.0, -1.5, -0.5];
        let (r, _) = recovered_fraction_with_samples(&k, &z, &k, &[], 0.95);
        assert_eq!(r.fraction, 1.0);
        let (r, n) = recovered_fraction_with_samples(&z, &z, &k, &[], 0.95);
        assert_eq!(r.fraction, 0.0);
        assert_eq!(n, 3);
    }

    #[test]
    fn targets_with_a_missing_value_are_left_out() {
        let z = [0.0, 0.0, f64::NAN];
        let k = [1.0, 1.0, 1.0];
        let p = [0.5, 0.5, 0.5];
        let (r, n) = recovered_fraction_with_samples(&p, &z, &k, &[vec![0, 1]], 0.95);
        assert_eq!(n, 2);
        assert_eq!(r.fraction, 0.5);
        assert_eq!((r.ci_low, r.ci_high), (0.5, 0.5));
    }

    #[test]
    fn no_gain_gives_no_fraction() {
        let z = [1.0, 2.0];
        let (r, _) = recovered_fraction_with_samples(&z, &z, &z, &[vec![0, 1]], 0.95);
        assert!(r.fraction.is_nan() && r.ci_low.is_nan());
    }

    #[test]
    fn a_random_vector_has_the_norm_asked_for() {
        let mut rng = SeededRng::new(3);
        let v = random_vector_of_norm(577, 12.5, &mut rng);
        assert_eq!(v.len(), 577);
        assert!((norm(&v) - 12.5).abs() < 1e-4);
    }
}
