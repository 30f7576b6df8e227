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

/// The recovered fraction of one method, measure and layer over targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recovery {
    pub fraction: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub mean_patched: f64,
    pub mean_zero_shot: f64,
    pub mean_k_shot: f64,
    /// Targets with all three values finite.
    pub n: usize,
}

impl Recovery {
    /// The six numbers in the order of the bundle's `patching_recovery`.
    pub fn fields(&self) -> [f64; 6] {
        [
            self.fraction,
            self.ci_low,
            self.ci_high,
            self.mean_patched,
            self.mean_zero_shot,
            self.mean_k_shot,
        ]
    }
}

fn mean_of(values: &[f64], indices: impl Iterator<Item = usize>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for i in indices {
        sum += values[i];
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// `(mean p − mean z) / (mean k − mean z)` over `indices`; NaN when the
/// denominator is zero.
fn fraction_over(p: &[f64], z: &[f64], k: &[f64], indices: &[usize]) -> f64 {
    let mz = mean_of(z, indices.iter().copied());
    let gain = mean_of(k, indices.iter().copied()) - mz;
    if gain == 0.0 {
        return f64::NAN;
    }
    (mean_of(p, indices.iter().copied()) - mz) / gain
}

/// The recovered fraction (see the module doc) of `patched` between
/// `zero_shot` and `k_shot` (one value per target each), with the
/// percentile interval at `confidence` over the bootstrap `samples` (each
/// a list of indices into the targets with all three values finite, as
/// many as there are such targets).
pub fn recovered_fraction_with_samples(
    patched: &[f64],
    zero_shot: &[f64],
    k_shot: &[f64],
    samples: &[Vec<usize>],
    confidence: f64,
) -> Recovery {
    let kept: Vec<usize> = (0..patched.len().min(zero_shot.len()).min(k_shot.len()))
        .filter(|&i| patched[i].is_finite() && zero_shot[i].is_finite() && k_shot[i].is_finite())
        .collect();
    let p: Vec<f64> = kept.iter().map(|&i| patched[i]).collect();
    let z: Vec<f64> = kept.iter().map(|&i| zero_shot[i]).collect();
    let k: Vec<f64> = kept.iter().map(|&i| k_shot[i]).collect();
    let all: Vec<usize> = (0..kept.len()).collect();
    let fraction = fraction_over(&p, &z, &k, &all);
    let boot: Vec<f64> = samples
        .iter()
        .filter(|s| !s.is_empty() && s.iter().all(|&i| i < kept.len()))
        .map(|s| fraction_over(&p, &z, &k, s))
        .collect();
    let (ci_low, ci_high) = if fraction.is_finite() {
        percentile_interval(&boot, confidence)
    } else {
        (f64::NAN, f64::NAN)
    };
    Recovery {
        fraction,
        ci_low,
        ci_high,
        mean_patched: mean_of(&p, 0..p.len()),
        mean_zero_shot: mean_of(&z, 0..z.len()),
        mean_k_shot: mean_of(&k, 0..k.len()),
        n: kept.len(),
    }
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
) -> Recovery {
    let n = (0..patched.len().min(zero_shot.len()).min(k_shot.len()))
        .filter(|&i| patched[i].is_finite() && zero_shot[i].is_finite() && k_shot[i].is_finite())
        .count();
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
    Some(sum.iter().map(|&s| (scale * s / n as f64) as f32).collect())
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
        let r = recovered_fraction_with_samples(&k, &z, &k, &[], 0.95);
        assert_eq!(r.fraction, 1.0);
        let r = recovered_fraction_with_samples(&z, &z, &k, &[], 0.95);
        assert_eq!(r.fraction, 0.0);
        assert_eq!(r.n, 3);
    }

    #[test]
    fn targets_with_a_missing_value_are_left_out() {
        let z = [0.0, 0.0, f64::NAN];
        let k = [1.0, 1.0, 1.0];
        let p = [0.5, 0.5, 0.5];
        let r = recovered_fraction_with_samples(&p, &z, &k, &[vec![0, 1]], 0.95);
        assert_eq!(r.n, 2);
        assert_eq!(r.fraction, 0.5);
        assert_eq!((r.ci_low, r.ci_high), (0.5, 0.5));
    }

    #[test]
    fn no_gain_gives_no_fraction() {
        let z = [1.0, 2.0];
        let r = recovered_fraction_with_samples(&z, &z, &z, &[vec![0, 1]], 0.95);
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
