//! The LLM judge of `sprout eval ... --judge-url URL --judge-model M`: asks any OpenAI-compatible
//! chat endpoint (sprout itself serving the 1.5B model is the local default) to grade how well
//! one recommended item fits one request, 0–5, as the seed team's evaluation did. The answer is
//! held to `{"score": 0..5}` by `response_format` (a JSON schema), so no reply needs parsing
//! by hand; an item that does not exist gets 0 without asking.
//!
//! A judge can be blind: a small model may grade everything 5. So each case also has a
//! *control* graded the same way — a catalog item picked for not answering the request (another
//! category, a random book) — and the summary sets the answers' mean beside the controls'. A
//! judge that does not score the answers clearly above the controls says nothing about them.

use serde_json::{json, Value};

/// The grade of an item that is not in the catalog (the seed's rule).
pub const MISSING_ITEM_SCORE: u8 = 0;

/// Where the judge runs and how to call it.
#[derive(Debug, Clone)]
pub struct Judge {
    http: reqwest::Client,
    chat_url: String,
    model: String,
    api_key: Option<String>,
}

/// The schema of the judge's reply.
fn score_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"score": {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]}},
        "required": ["score"],
        "additionalProperties": false
    })
}

/// The judge's instructions: the request, then the item, then the scale.
fn prompt(request: &str, item: &str) -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "You grade recommendations strictly. Reply only with JSON."}),
        json!({"role": "user", "content": format!(
            "User request:\n{request}\n\nRecommended item:\n{item}\n\n\
             How well does this item fit the request? Score 0 to 5: 5 = an excellent fit, \
             3 = somewhat relevant, 1 = barely related, 0 = irrelevant or nonsense. \
             Reply as {{\"score\": N}}."
        )}),
    ]
}

impl Judge {
    /// A judge behind `base_url` (`http://host:port`, with or without `/v1`).
    pub fn new(base_url: &str, model: &str, api_key: Option<&str>) -> anyhow::Result<Judge> {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Ok(Judge {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(300))
                .build()?,
            chat_url: format!("{base}/v1/chat/completions"),
            model: model.to_string(),
            api_key: api_key.map(str::to_string),
        })
    }

    /// The model's grade, 0–5, of `item` for `request`.
    pub async fn score(&self, request: &str, item: &str) -> anyhow::Result<u8> {
        let body = json!({
            "model": self.model,
            "messages": prompt(request, item),
            "temperature": 0,
            "max_tokens": 16,
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "grade", "strict": true, "schema": score_schema()}},
        });
        let mut req = self.http.post(&self.chat_url).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let reply: Value = resp.json().await?;
        if !status.is_success() {
            anyhow::bail!("the judge answered {status}: {reply}");
        }
        let content = reply["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the judge's reply has no content: {reply}"))?;
        parse_score(content)
    }
}

/// Whether the answers' mean is clearly above the controls' (by at least a point): only
/// then do the judge's grades tell good from bad.
pub fn discriminates(answers_mean: f64, controls_mean: f64) -> bool {
    answers_mean - controls_mean >= 1.0
}

/// Which of `n` candidate controls case `case` gets: spread over the list, the same every run.
pub fn control_index(case: usize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (case * 7919 + 13) % n
    }
}

/// The score in a reply `{"score": N}`, N in 0..=5.
pub fn parse_score(content: &str) -> anyhow::Result<u8> {
    let v: Value = serde_json::from_str(content.trim())
        .map_err(|e| anyhow::anyhow!("the judge's reply is not JSON ({e}): {content}"))?;
    match v["score"].as_u64() {
        Some(n) if n <= 5 => Ok(n as u8),
        _ => anyhow::bail!("the judge's reply holds no score 0..5: {content}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_integers_from_zero_to_five() {
        assert_eq!(parse_score(r#"{"score": 4}"#).ok(), Some(4));
        assert_eq!(parse_score(" {\"score\":0}\n").ok(), Some(0));
        assert!(parse_score(r#"{"score": 6}"#).is_err());
        assert!(parse_score(r#"{"score": "5"}"#).is_err());
        assert!(parse_score("five").is_err());
    }

    #[test]
    fn controls_are_spread_and_stable() {
        let picks: Vec<usize> = (0..5).map(|c| control_index(c, 10)).collect();
        assert_eq!(
            picks,
            (0..5).map(|c| control_index(c, 10)).collect::<Vec<_>>()
        );
        assert!(picks.iter().all(|&i| i < 10));
        assert!(picks.windows(2).all(|w| w[0] != w[1]), "{picks:?}");
        assert_eq!(control_index(3, 0), 0);
        assert!(discriminates(4.2, 2.0) && !discriminates(5.0, 4.5));
    }

    #[test]
    fn the_judge_url_takes_a_base_with_or_without_v1() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/",
        ] {
            let j = Judge::new(base, "m", None).expect("a client");
            assert_eq!(j.chat_url, "http://h:1/v1/chat/completions", "{base}");
        }
    }

    #[test]
    fn the_prompt_names_the_request_and_the_item() {
        let p = prompt("분리수거를 잘하고 싶어요", "텀블러 사용하기");
        let user = p[1]["content"].as_str().expect("text");
        assert!(user.contains("분리수거를 잘하고 싶어요") && user.contains("텀블러 사용하기"));
        assert_eq!(score_schema()["properties"]["score"]["enum"][5], 5);
    }
}
