//! Choosing the next token from logits: penalties, per-sequence masks, greedy or seeded
//! temperature sampling with top-k, top-p and min-p.

use crate::{EngineError, Result};

/// How one sequence picks its tokens. `temperature == 0` is greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one; 0 disables.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of tokens already generated; 1 disables.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// Seed of the random stream: the same seed gives the same output.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks every range; the message names the offending parameter.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::InvalidRequest(m));
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return bad(format!(
                "temperature must be in [0, 100], got {}",
                self.temperature
            ));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.min_p.is_finite() && (0.0..=1.0).contains(&self.min_p)) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite()
            && self.repetition_penalty > 0.0
            && self.repetition_penalty <= 10.0)
        {
            return bad(format!(
                "repetition_penalty must be in (0, 10], got {}",
                self.repetition_penalty
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
                return bad(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        Ok(())
    }
}

/// A set of allowed token ids (one bit per token), e.g. from a grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    bits: Vec<u64>,
}

impl TokenMask {
    /// A mask over `vocab` tokens allowing none.
    pub fn none(vocab: usize) -> Self {
        Self {
            bits: vec![0; vocab.div_ceil(64)],
        }
    }

    /// A mask over `vocab` tokens from 32-bit words (token i is bit i % 32 of word i / 32).
    pub fn from_words32(words: &[u32], vocab: usize) -> Self {
        let mut bits = vec![0u64; vocab.div_ceil(64)];
        for (i, w) in bits.iter_mut().enumerate() {
            let lo = words.get(2 * i).copied().unwrap_or(0) as u64;
            let hi = words.get(2 * i + 1).copied().unwrap_or(0) as u64;
            *w = lo | hi << 32;
        }
        if !vocab.is_multiple_of(64) {
            if let Some(last) = bits.last_mut() {
                *last &= (1u64 << (vocab % 64)) - 1;
            }
        }
        Self { bits }
    }

    /// Allowed tokens.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Allows token `id`.
    pub fn allow(&mut self, id: u32) {
        if let Some(w) = self.bits.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
        }
    }

    /// Whether token `id` is allowed.
    pub fn allows(&self, id: u32) -> bool {
        self.bits
            .get(id as usize / 64)
            .is_some_and(|w| w >> (id % 64) & 1 == 1)
    }
}

/// The sampling state of one sequence: its parameters and random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256,
    candidates: Vec<(u32, f32)>,
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler for `params` (validate them first).
    pub fn new(params: SamplingParams) -> Self {
        Self {
            rng: Xoshiro256::seeded(params.seed),
            params,
            candidates: Vec::new(),
            counts: Default::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token the sequence produced, for the penalties.
    pub fn accept(&mut self, token: u32) {
        *self.counts.entry(token).or_default() += 1;
    }

    /// Picks the next token. `logits` is modified (penalties, mask). Returns None when the mask
    /// allows no token or every logit is NaN.
    pub fn sample(&mut self, logits: &mut [f32], mask: Option<&TokenMask>) -> Option<u32> {
        let p = &self.params;
        for (&tok, &n) in &self.counts {
            let Some(l) = logits.get_mut(tok as usize) else {
                continue;
            };
            if p.repetition_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
            *l -= p.presence_penalty + p.frequency_penalty * n as f32;
        }
        if let Some(m) = mask {
            for (i, l) in logits.iter_mut().enumerate() {
                if !m.allows(i as u32) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let best = argmax(logits)?;
        if p.temperature <= 0.0 {
            return Some(best);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l / p.temperature)),
        );
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_weight);
            c.truncate(p.top_k);
        }
        // Weights relative to the best token (whose weight is 1); their sum normalizes.
        let max = logits[best as usize] / p.temperature;
        let mut sum = 0.0f32;
        for e in c.iter_mut() {
            e.1 = (e.1 - max).exp();
            sum += e.1;
        }
        let u = self.rng.next_f32();
        pick(c, sum, p.min_p, p.top_p, u)
    }
}

/// Descending weight, then ascending id: the order tokens are considered in.
fn by_weight(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Samples from candidates `c` (id, weight; `sum` of the weights, the best weighs 1) after
/// min-p (weight ≥ `min_p`) and top-p (the shortest prefix, in [`by_weight`] order, holding
/// `top_p` of the mass), by walking that order until `u` of the kept mass is used up.
///
/// Only as long a prefix as the walk needs is sorted: first the best 256 (a partial selection
/// in linear time), then 8× more whenever the kept set or the walk goes beyond it. Sorting the
/// whole 150k-token vocabulary for every sampled token cost several milliseconds per token.
fn pick(c: &mut [(u32, f32)], sum: f32, min_p: f32, top_p: f32, u: f32) -> Option<u32> {
    let n = c.len();
    let mut k = n.min(256);
    loop {
        if k < n {
            c.select_nth_unstable_by(k - 1, by_weight);
        }
        c[..k].sort_unstable_by(by_weight);
        // Where min-p or top-p cut the sorted prefix, if they do within it.
        let mut cut = None;
        let mut cum = 0.0f32;
        for (i, e) in c[..k].iter().enumerate() {
            if e.1 < min_p {
                cut = Some(i.max(1));
                break;
            }
            cum += e.1;
            if top_p < 1.0 && cum >= top_p * sum {
                cut = Some(i + 1);
                break;
            }
        }
        let total = match cut {
            Some(t) => c[..t].iter().map(|e| e.1).sum(),
            // The kept set reaches past this prefix: its mass is known only without top-p.
            None if top_p < 1.0 && k < n => {
                k = (k * 8).min(n);
                continue;
            }
            None if min_p <= 0.0 => sum,
            None => c.iter().filter(|e| e.1 >= min_p).map(|e| e.1).sum::<f32>(),
        };
        let mut r = u * total;
        for e in &c[..cut.unwrap_or(k)] {
            r -= e.1;
            if r <= 0.0 {
                return Some(e.0);
            }
        }
        if cut.is_some() || k == n {
            return c[..cut.unwrap_or(k)].last().map(|e| e.0);
        }
        k = (k * 8).min(n);
    }
}

/// Index of the largest logit that is neither NaN nor −∞ (lowest index on ties), or None if
/// there is none.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    // Two passes the compiler vectorizes (a maximum, then its first position) instead of one
    // branchy pass: a 152k-entry vocabulary is scanned for every token of every sequence.
    let max = fold_lanes(
        logits,
        f32::NEG_INFINITY,
        |m, l| if l > m { l } else { m },
        f32::max,
    );
    if max == f32::NEG_INFINITY {
        return None;
    }
    logits.iter().position(|&l| l == max).map(|i| i as u32)
}

/// Whether any logit is NaN (one vectorized pass, no early exit).
pub fn has_nan(logits: &[f32]) -> bool {
    fold_lanes(
        logits,
        0.0,
        |a, l| if l.is_nan() { 1.0 } else { a },
        f32::max,
    ) != 0.0
}

/// Folds `v` with `step` in 16 independent lanes (so the loop vectorizes), then combines the
/// lanes with `merge`.
fn fold_lanes(
    v: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    merge: impl Fn(f32, f32) -> f32,
) -> f32 {
    const LANES: usize = 16;
    let mut acc = [init; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &l) in acc.iter_mut().zip(c) {
            *a = step(*a, l);
        }
    }
    let lanes = acc.into_iter().reduce(&merge).unwrap_or(init);
    rest.iter().fold(lanes, |a, &l| merge(a, step(init, l)))
}

/// xoshiro256** seeded through splitmix64: small, fast and reproducible across platforms.
#[derive(Debug, Clone)]
struct Xoshiro256([u64; 4]);

impl Xoshiro256 {
    fn seeded(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..Default::default()
        }
    }

    /// The full-sort definition `pick` must equal.
    fn pick_by_full_sort(c: &[(u32, f32)], min_p: f32, top_p: f32, u: f32) -> Option<u32> {
        let mut c = c.to_vec();
        c.sort_unstable_by(by_weight);
        let sum: f32 = c.iter().map(|e| e.1).sum();
        let keep = c.iter().take_while(|e| e.1 >= min_p).count().max(1);
        c.truncate(keep);
        let mut cum = 0.0;
        let keep = c
            .iter()
            .position(|e| {
                cum += e.1;
                top_p < 1.0 && cum >= top_p * sum
            })
            .map_or(c.len(), |i| i + 1);
        c.truncate(keep);
        let mut r = u * c.iter().map(|e| e.1).sum::<f32>();
        for e in &c {
            r -= e.1;
            if r <= 0.0 {
                return Some(e.0);
            }
        }
        c.last().map(|e| e.0)
    }

    #[test]
    fn partial_sort_picks_what_a_full_sort_picks() {
        let mut rng = Xoshiro256::seeded(7);
        for n in [1usize, 3, 255, 256, 257, 3000, 20_000] {
            // Flat and peaked distributions, with ties.
            for flat in [true, false] {
                let c: Vec<(u32, f32)> = (0..n as u32)
                    .map(|i| {
                        let x = rng.next_f32();
                        let w = if flat { 0.5 + 0.5 * x } else { x.powi(12) };
                        (i, (w * 64.0).round() / 64.0)
                    })
                    .collect();
                let best = c.iter().map(|e| e.1).fold(0f32, f32::max).max(1e-9);
                let c: Vec<(u32, f32)> = c.iter().map(|&(i, w)| (i, w / best)).collect();
                let sum: f32 = c.iter().map(|e| e.1).sum();
                for (min_p, top_p) in [
                    (0.0, 1.0),
                    (0.0, 0.9),
                    (0.05, 1.0),
                    (0.2, 0.5),
                    (0.0, 0.999),
                ] {
                    for u in [0.0, 0.01, 0.37, 0.5, 0.93, 0.999_999] {
                        let want = pick_by_full_sort(&c, min_p, top_p, u);
                        let got = pick(&mut c.clone(), sum, min_p, top_p, u);
                        assert_eq!(
                            got, want,
                            "n {n} flat {flat} min_p {min_p} top_p {top_p} u {u}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn vectorized_argmax_and_nan_scan_match_a_plain_loop() {
        fn plain(v: &[f32]) -> Option<u32> {
            let mut best: Option<(usize, f32)> = None;
            for (i, &l) in v.iter().enumerate() {
                if !l.is_nan() && l != f32::NEG_INFINITY && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
            best.map(|(i, _)| i as u32)
        }
        let mut rng = Xoshiro256::seeded(11);
        for n in [0usize, 1, 15, 16, 17, 33, 1000, 151_936] {
            for case in 0..6 {
                // Coarse values (ties), NaN and −∞ sprinkled, everything pathological once.
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        let x = rng.next_f32();
                        match case {
                            0 => (x * 8.0).floor(),
                            1 if x < 0.1 => f32::NAN,
                            2 if x < 0.5 => f32::NEG_INFINITY,
                            3 => f32::NAN,
                            4 => f32::NEG_INFINITY,
                            _ => x * 100.0 - 50.0,
                        }
                    })
                    .collect();
                assert_eq!(argmax(&v), plain(&v), "n {n} case {case}");
                assert_eq!(
                    has_nan(&v),
                    v.iter().any(|l| l.is_nan()),
                    "n {n} case {case}"
                );
            }
            if n > 0 {
                // A NaN only in the last element (the remainder past the lanes) still counts.
                let mut v = vec![0.5f32; n];
                v[n - 1] = f32::NAN;
                assert!(has_nan(&v), "n {n}");
                assert_eq!(argmax(&v), (n > 1).then_some(0));
            }
        }
    }

    #[test]
    fn greedy_takes_the_max_and_skips_nan() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, f32::NAN, 2.0, 1.0], None), Some(2));
        assert_eq!(s.sample(&mut [f32::NAN, f32::NAN], None), None);
    }

    #[test]
    fn mask_restricts_choice() {
        let mut m = TokenMask::none(4);
        m.allow(3);
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [5.0, 4.0, 3.0, -1.0], Some(&m)), Some(3));
        assert_eq!(
            s.sample(&mut [5.0, 4.0, 3.0, -1.0], Some(&TokenMask::none(4))),
            None
        );
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_roughly_right() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..2000)
                .map(|_| s.sample(&mut logits.clone(), None).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let ones = a.iter().filter(|&&t| t == 1).count() as f32 / 2000.0;
        assert!((ones - 0.75).abs() < 0.05, "P(1) = {ones}, expected 0.75");
        assert!(!a.contains(&2));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        for p in [
            SamplingParams {
                top_k: 1,
                ..params(1.5)
            },
            SamplingParams {
                top_p: 0.01,
                ..params(1.5)
            },
        ] {
            let mut s = Sampler::new(p);
            for _ in 0..50 {
                assert_eq!(s.sample(&mut [1.0, 3.0, 2.9], None), Some(1));
            }
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.5,
            ..params(1.0)
        });
        for _ in 0..200 {
            // P(2)/P(0) = e^-2 < 0.5: token 2 never chosen; token 1 ties token 0.
            let t = s.sample(&mut [2.0, 2.0, 0.0], None).unwrap();
            assert!(t < 2);
        }
    }

    #[test]
    fn penalties_apply_to_accepted_tokens() {
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 1.5,
            ..params(0.0)
        });
        s.accept(0);
        assert_eq!(s.sample(&mut [2.0, 1.0], None), Some(1));
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 3.0,
            ..params(0.0)
        });
        s.accept(0);
        assert_eq!(s.sample(&mut [2.0, 1.0], None), Some(1), "2/3 < 1");
    }

    #[test]
    fn validation_names_the_parameter() {
        let e = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("top_p"));
        let e = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("temperature"));
    }
}
