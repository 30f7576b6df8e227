//! The two array shapes the analyses exchange: a borrowed `n × dim` block of
//! `f32` embeddings (one row per prompt, as the capture produces them) and an
//! owned `n × n` `f64` matrix (similarities, hypotheses, Gram matrices).
//!
//! Both are row-major. A [`SquareMatrix`]'s pairs `i < j` are enumerated in
//! row-major order of the strict upper triangle, `(0,1), (0,2), …, (n−2,n−1)`,
//! everywhere in the module (see [`SquareMatrix::upper_triangle`]).

use super::AnalysisError;

/// Borrowed embeddings: `n` prompts × `dim` features, row-major `f32`.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    data: &'a [f32],
    n: usize,
    dim: usize,
}

impl<'a> Embeddings<'a> {
    /// Wraps `data` (row-major, `n * dim` values).
    pub fn new(data: &'a [f32], n: usize, dim: usize) -> Result<Self, AnalysisError> {
        if n == 0 || dim == 0 {
            return Err(AnalysisError::TooFew {
                what: "embeddings (prompts and features)",
                needed: 1,
                got: n.min(dim),
            });
        }
        AnalysisError::check_len("embedding data (n × dim)", n * dim, data.len())?;
        Ok(Embeddings { data, n, dim })
    }

    /// Number of prompts (rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of features (columns).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The raw row-major values.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Prompt `i`'s features.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Number of unordered pairs `i < j` among `n` items: `n(n−1)/2`.
pub fn pair_count(n: usize) -> usize {
    n * n.saturating_sub(1) / 2
}

/// An owned `n × n` matrix of `f64`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareMatrix {
    n: usize,
    data: Vec<f64>,
}

impl SquareMatrix {
    /// Wraps row-major `data` of length `n * n`.
    pub fn new(n: usize, data: Vec<f64>) -> Result<Self, AnalysisError> {
        AnalysisError::check_len("square matrix data (n × n)", n * n, data.len())?;
        Ok(SquareMatrix { n, data })
    }

    /// The matrix with entry `(i, j) = f(i, j)`.
    pub fn from_fn(n: usize, mut f: impl FnMut(usize, usize) -> f64) -> Self {
        let mut data = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                data.push(f(i, j));
            }
        }
        SquareMatrix { n, data }
    }

    /// Side length.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Entry `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    /// The row-major values.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// The strict upper triangle `(i, j), i < j`, in row-major order
    /// (`n(n−1)/2` values).
    pub fn upper_triangle(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(pair_count(self.n));
        for i in 0..self.n {
            out.extend_from_slice(&self.row(i)[i + 1..]);
        }
        out
    }

    /// The matrix with prompts reordered: entry `(i, j)` of the result is
    /// entry `(perm[i], perm[j])` of `self`.
    pub fn permuted(&self, perm: &[usize]) -> SquareMatrix {
        SquareMatrix::from_fn(self.n, |i, j| self.get(perm[i], perm[j]))
    }

    /// Checks that `other` has the same side length (`what` names `other`).
    pub(crate) fn check_same_size(
        &self,
        other: &SquareMatrix,
        what: &'static str,
    ) -> Result<(), AnalysisError> {
        AnalysisError::check_len(what, self.n, other.n)
    }

    /// Row `i` without its diagonal entry (`n − 1` values).
    pub(crate) fn row_without_diagonal(&self, i: usize) -> Vec<f64> {
        let row = self.row(i);
        row[..i].iter().chain(&row[i + 1..]).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_triangle_is_row_major_strict() {
        let m = SquareMatrix::from_fn(3, |i, j| (10 * i + j) as f64);
        assert_eq!(m.upper_triangle(), vec![1.0, 2.0, 12.0]);
        assert_eq!(pair_count(3), 3);
        assert_eq!(pair_count(0), 0);
    }

    #[test]
    fn permuted_reorders_rows_and_columns_together() {
        let m = SquareMatrix::from_fn(3, |i, j| (10 * i + j) as f64);
        let p = m.permuted(&[2, 0, 1]);
        assert_eq!(p.get(0, 1), 20.0);
        assert_eq!(p.get(1, 2), 1.0);
    }

    #[test]
    fn embeddings_of_the_wrong_length_are_refused() {
        let data = [0.0f32; 5];
        assert!(Embeddings::new(&data, 2, 3).is_err());
        assert!(Embeddings::new(&data[..4], 2, 2).is_ok());
    }
}
