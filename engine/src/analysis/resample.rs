//! Seeded randomness for the analyses: permutations (the RSA permutation
//! test, PAPER.md analysis 2), bootstrap draws (its confidence interval) and
//! fold assignment (the probes, analysis 3).
//!
//! The stream depends only on ChaCha8 and the seed: bounded integers are
//! drawn from `next_u64` with Lemire's multiply-and-reject method (unbiased),
//! and shuffles are our own Fisher–Yates, so no `rand` distribution code whose
//! algorithm could change between versions is involved. Draws are made
//! sequentially before any parallel work, so results do not depend on the
//! number of threads.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A ChaCha8 stream with the few operations the analyses need.
#[derive(Debug, Clone)]
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    /// The stream for `seed` (ChaCha8's `seed_from_u64`).
    pub fn new(seed: u64) -> Self {
        SeededRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The next raw 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform integer in `0..bound` (`bound > 0`), unbiased.
    ///
    /// Lemire (2019), "Fast random integer generation in an interval": the
    /// high word of `x · bound` is uniform once the low word is at least
    /// `2^64 mod bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SeededRng::below needs a positive bound");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform index in `0..len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Shuffles `items` in place (Fisher–Yates, from the back).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// A uniform random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// `n` indices drawn uniformly from `0..n` with replacement (one
    /// bootstrap sample).
    pub fn bootstrap_indices(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.index(n)).collect()
    }

    /// A uniform `f32` in `[−1, 1)` with 24 random bits (for synthetic data).
    pub fn symmetric_unit_f32(&mut self) -> f32 {
        let bits = (self.next_u64() >> 40) as u32; // 24 bits
        (bits as f32 / (1u32 << 23) as f32) - 1.0
    }
}

/// `count` random permutations of `0..n` from the stream of `seed`.
pub fn random_permutations(n: usize, count: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SeededRng::new(seed);
    (0..count).map(|_| rng.permutation(n)).collect()
}

/// `count` bootstrap samples of `0..n` (each of length `n`, with replacement)
/// from the stream of `seed`.
pub fn bootstrap_samples(n: usize, count: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SeededRng::new(seed);
    (0..count).map(|_| rng.bootstrap_indices(n)).collect()
}

/// An independent seed for sub-stream `stream` of `seed` (SplitMix64's
/// finaliser over both), for nested procedures such as inner
/// cross-validation, so that they do not reuse the outer stream.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stream id for a named purpose (FNV-1a of the name), for
/// [`derive_seed`]: `derive_seed(seed, named_stream("rsa/task/hypothesis"))`.
/// Naming streams keeps one purpose's draws unchanged when another is added.
pub fn named_stream(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A generator for a named purpose under an experiment's seed.
pub fn named_rng(seed: u64, name: &str) -> SeededRng {
    SeededRng::new(derive_seed(seed, named_stream(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_permutations_and_reproducible() {
        let a = random_permutations(50, 20, 7);
        let b = random_permutations(50, 20, 7);
        assert_eq!(a, b);
        for p in &a {
            let mut sorted = p.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        }
        assert_ne!(a, random_permutations(50, 20, 8));
    }

    #[test]
    fn bounded_integers_are_roughly_uniform() {
        let mut rng = SeededRng::new(1);
        let mut counts = [0usize; 6];
        let draws = 60_000;
        for _ in 0..draws {
            counts[rng.index(6)] += 1;
        }
        // 10,000 expected per cell, standard deviation ≈ 91; 5 σ is generous.
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 460.0, "{counts:?}");
        }
    }

    #[test]
    fn derived_seeds_differ_by_stream() {
        assert_ne!(derive_seed(3, 0), derive_seed(3, 1));
        assert_ne!(derive_seed(3, 0), derive_seed(4, 0));
        assert_eq!(derive_seed(3, 5), derive_seed(3, 5));
    }

    #[test]
    fn symmetric_unit_floats_stay_in_range() {
        let mut rng = SeededRng::new(2);
        for _ in 0..10_000 {
            let x = rng.symmetric_unit_f32();
            assert!((-1.0..1.0).contains(&x));
        }
    }
}
