//! Random scores, uniform in [0, 1), from ChaCha8 seeded with the given seed: the baseline every
//! criterion should beat. Deterministic for a seed (groups drawn in order, channels in order).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::analysis::Group;

pub(super) fn score(groups: &[Group], seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    groups.iter().map(|g| (0..g.size).map(|_| rng.random::<f64>()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::tiny;
    use super::super::{Criterion, score};

    #[test]
    fn deterministic_for_a_seed() {
        let (m, g) = tiny();
        let a = score(Criterion::Random, &m, &g, None, 7).unwrap();
        assert_eq!(a, score(Criterion::Random, &m, &g, None, 7).unwrap());
        assert_ne!(a, score(Criterion::Random, &m, &g, None, 8).unwrap());
        for (s, g) in a.iter().zip(&g) {
            assert_eq!(s.len(), g.size);
            assert!(s.iter().all(|v| (0.0..1.0).contains(v)));
        }
    }
}
