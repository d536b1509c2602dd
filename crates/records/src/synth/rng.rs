//! A small deterministic generator (SplitMix64): the same seed gives the same stream on
//! every platform and every version of this crate, which no external RNG crate promises.

pub(crate) struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// An independent stream for item `index` of a run seeded with `seed`.
    pub fn for_item(seed: u64, index: u64) -> Self {
        Rng(mix(seed ^ 0x5eed_ca4e_f10e_0000) ^ mix(index.wrapping_add(0x9e37_79b9_7f4a_7c15)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as i64
    }

    /// Roughly normal (sum of uniforms), rounded to `decimals`.
    pub fn normal(&mut self, mean: f64, sd: f64, decimals: i32) -> f64 {
        let z: f64 = (0..6).map(|_| self.unit()).sum::<f64>() * 2.0 - 6.0;
        let scale = 10f64.powi(decimals);
        ((mean + z * sd / 2.0f64.sqrt()) * scale).round() / scale
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_and_differ_by_seed_and_item() {
        let take = |seed, item| {
            let mut r = Rng::for_item(seed, item);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(take(7, 0), take(7, 0));
        assert_ne!(take(7, 0), take(7, 1));
        assert_ne!(take(7, 0), take(8, 0));
        let mut r = Rng::for_item(1, 1);
        let mean = (0..10_000).map(|_| r.normal(10.0, 2.0, 3)).sum::<f64>() / 10_000.0;
        assert!((mean - 10.0).abs() < 0.1, "{mean}");
        assert!((0..1000).all(|_| (3..=5).contains(&r.between(3, 5))));
    }
}
