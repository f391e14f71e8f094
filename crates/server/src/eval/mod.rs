//! `sprout eval`: runs a case file against a running server and scores every answer, per domain
//! ([`leafresh`], [`books`]), alike: validity, groundedness, the domain's own hits, latency,
//! token counts (from the `x-sprout-usage` header) and, with a judge endpoint, an LLM judge's
//! 0–5 per recommended item ([`judge`]).

pub mod books;
pub mod judge;
pub mod leafresh;

pub use leafresh::{run, summarize, CaseResult, Summary};

use serde::Serialize;
use serde_json::Value;

/// Parses a case file: one JSON object per non-blank line.
pub fn parse_cases(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1)))
        .collect()
}

/// One request's token counts as the server reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub forced: u64,
}

impl Tokens {
    /// The counts in a response's `x-sprout-usage` header; None when it has none (an answer
    /// that ran no model, or a server that does not send it).
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Option<Tokens> {
        let text = headers.get(crate::pipeline::USAGE_HEADER)?.to_str().ok()?;
        Tokens::from_json(&serde_json::from_str(text).ok()?)
    }

    /// The counts in a usage object (`prompt_tokens`, `completion_tokens`, `cached_tokens`,
    /// `forced_tokens`).
    pub fn from_json(v: &Value) -> Option<Tokens> {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Tokens {
            prompt: n("prompt_tokens")?,
            completion: n("completion_tokens")?,
            cached: n("cached_tokens").unwrap_or(0),
            forced: n("forced_tokens").unwrap_or(0),
        })
    }
}

/// Means of the token counts over the results that have them; None when none has.
pub fn mean_tokens<'a>(all: impl Iterator<Item = &'a Option<Tokens>>) -> Option<MeanTokens> {
    let (mut n, mut sum) = (0u64, [0u64; 4]);
    for t in all.flatten() {
        n += 1;
        for (s, v) in sum
            .iter_mut()
            .zip([t.prompt, t.completion, t.cached, t.forced])
        {
            *s += v;
        }
    }
    (n > 0).then(|| {
        let m = |i: usize| sum[i] as f64 / n as f64;
        MeanTokens {
            answers: n,
            prompt: m(0),
            completion: m(1),
            cached: m(2),
            forced: m(3),
        }
    })
}

/// Mean token counts per answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanTokens {
    /// Answers that reported counts.
    pub answers: u64,
    pub prompt: f64,
    pub completion: f64,
    pub cached: f64,
    pub forced: f64,
}

/// Every item of the served catalog `name`, page by page (`/v1/catalogs/{name}/items`).
pub async fn catalog_items(
    http: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    name: &str,
) -> anyhow::Result<Vec<Value>> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    loop {
        let mut req = http.get(format!(
            "{url}/v1/catalogs/{name}/items?limit={PAGE}&offset={}",
            all.len()
        ));
        if let Some(k) = api_key {
            req = req.bearer_auth(k);
        }
        let page: Value = req.send().await?.error_for_status()?.json().await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let last = items.len() < PAGE;
        all.extend(items);
        if last {
            return Ok(all);
        }
    }
}

/// The first model the server at `url` lists (for the tables), "?" when it does not say.
pub async fn served_model(url: &str, api_key: Option<&str>) -> String {
    let mut req = reqwest::Client::new().get(format!("{url}/v1/models"));
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let found = async {
        let v: Value = req.send().await.ok()?.json().await.ok()?;
        v["data"][0]["id"].as_str().map(str::to_string)
    };
    found.await.unwrap_or_else(|| "?".into())
}

/// The `p`-quantile (0..=1) of `values` by nearest rank; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The mean of `values`; None for none.
pub fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = values.fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_come_from_the_usage_header() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(Tokens::from_headers(&h), None);
        h.insert(
            crate::pipeline::USAGE_HEADER,
            r#"{"prompt_tokens":120,"completion_tokens":30,"cached_tokens":100,"forced_tokens":12}"#
                .parse()
                .expect("a valid header value"),
        );
        assert_eq!(
            Tokens::from_headers(&h),
            Some(Tokens {
                prompt: 120,
                completion: 30,
                cached: 100,
                forced: 12
            })
        );
        h.insert(
            crate::pipeline::USAGE_HEADER,
            "nonsense".parse().expect("ascii"),
        );
        assert_eq!(Tokens::from_headers(&h), None);
    }

    #[test]
    fn means_skip_answers_without_counts() {
        let t = |p| {
            Some(Tokens {
                prompt: p,
                completion: 10,
                cached: 0,
                forced: 2,
            })
        };
        let all = [t(100), None, t(200)];
        let m = mean_tokens(all.iter()).expect("two answers have counts");
        assert_eq!(m.answers, 2);
        assert_eq!(m.prompt, 150.0);
        assert_eq!(m.forced, 2.0);
        assert!(mean_tokens([None].iter()).is_none());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
