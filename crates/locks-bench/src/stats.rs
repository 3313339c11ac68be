//! Samples and their percentiles.

/// Samples in µs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dist {
    samples: Vec<f64>,
}

impl Dist {
    pub(crate) fn push(&mut self, v: f64) {
        self.samples.push(v);
    }

    /// The `q` quantile (0..=1), nearest rank; NaN when empty.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    pub(crate) fn p50(&self) -> f64 {
        self.quantile(0.5)
    }

    pub(crate) fn p99(&self) -> f64 {
        self.quantile(0.99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut d = Dist::default();
        for v in 1..=100 {
            d.push(f64::from(v));
        }
        assert_eq!(d.p50(), 50.0);
        assert_eq!(d.p99(), 99.0);
        assert!(Dist::default().p50().is_nan());
    }
}
