//! `sprout eval leafresh`: runs a case file against a Leafresh server and scores every answer —
//! contract validity, groundedness (every title exists in the served `eco` catalog), category hit,
//! off-topic hit — with latency, then a summary. Cases are JSON lines: free text
//! `{"message", "lang"?, "category": CODE | null}` (null: off-topic expected) or base-info
//! `{"location", "workType", "category"}` (`"kind": "base-info"`). Token counts come from the
//! `x-sprout-usage` header; with a judge, each challenge gets a 0–5 grade for its request.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{json, Value};

use super::judge::{control_index, Judge, MISSING_ITEM_SCORE};
use super::{mean, mean_tokens, percentile, MeanTokens, Tokens};

/// One case and what became of it.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub request: Value,
    pub lang: String,
    pub expected_category: Option<String>,
    pub status: u16,
    pub valid: bool,
    pub grounded: bool,
    pub off_topic_answer: bool,
    pub category_hit: Option<bool>,
    pub latency_s: f64,
    pub answer: Value,
    pub problem: Option<String>,
    /// What the answer cost; None when no model ran (off-topic, validation).
    pub tokens: Option<Tokens>,
    /// The judge's grade of each challenge, in order (with `--judge-url`).
    pub judge_scores: Vec<u8>,
    /// The judge's grade of this case's control: a catalog challenge of another category.
    pub judge_control: Option<u8>,
    /// How the challenges' descriptions read (see [`Descriptions`]).
    pub descriptions: Descriptions,
}

/// What the answer's descriptions are: the catalog's own text, or text that repeats the
/// request (the model's usual failure when it writes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Descriptions {
    pub total: usize,
    /// Equal to the catalog item's description.
    pub from_catalog: usize,
    /// Containing the start of the request's message (its first 8 characters).
    pub echo_request: usize,
}

fn descriptions(answer: &Value, request: &Value, items: &[Value]) -> Descriptions {
    let start: String = request["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(8)
        .collect();
    let mut d = Descriptions::default();
    for c in answer["challenges"].as_array().into_iter().flatten() {
        let text = c["description"].as_str().unwrap_or("");
        d.total += 1;
        d.from_catalog += usize::from(
            items
                .iter()
                .any(|i| i["title"] == c["title"] && i["description"].as_str() == Some(text)),
        );
        d.echo_request += usize::from(start.chars().count() == 8 && text.contains(&start));
    }
    d
}

/// What a whole run came to.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub cases: usize,
    pub valid: usize,
    pub grounded: usize,
    pub on_topic_cases: usize,
    pub category_hits: usize,
    pub off_topic_cases: usize,
    pub off_topic_caught: usize,
    pub false_off_topic: usize,
    pub latency_p50_s: f64,
    pub latency_p90_s: f64,
    /// Mean token counts of the answers that ran the model.
    pub tokens: Option<MeanTokens>,
    /// The judge's mean grade over every graded challenge.
    pub judge_mean: Option<f64>,
    /// The judge's mean grade of the controls (see [`super::judge`]).
    pub judge_control_mean: Option<f64>,
    /// The descriptions of every answer, summed.
    pub descriptions: Descriptions,
}

fn check(
    body: &Value,
    titles: &BTreeSet<String>,
    expected: Option<&str>,
) -> (bool, bool, bool, Option<bool>, Option<String>) {
    let data = &body["data"];
    let envelope = body["status"] == 200 && body["message"].is_string();
    if data["challenges"].is_null() {
        let off = data["recommend"]
            .as_str()
            .is_some_and(|r| r.contains("Leafresh"));
        return (
            envelope && off,
            true,
            off,
            None,
            (!off).then(|| "no challenges".into()),
        );
    }
    let Some(ch) = data["challenges"].as_array() else {
        return (
            false,
            false,
            false,
            None,
            Some("challenges is not a list".into()),
        );
    };
    let names: Vec<&str> = ch.iter().filter_map(|c| c["title"].as_str()).collect();
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    let sentence_ok = data["recommend"]
        .as_str()
        .is_some_and(|r| r.ends_with("니다."));
    let valid = envelope && ch.len() == 3 && distinct.len() == 3 && sentence_ok;
    let grounded = names.len() == 3 && names.iter().all(|t| titles.contains(*t));
    let hit = expected.map(|e| ch.iter().all(|c| c["category"] == e));
    let problem = if !valid {
        Some("not three distinct challenges with a sentence ending in 니다.".into())
    } else if !grounded {
        Some("a title outside the catalog".into())
    } else {
        None
    };
    (valid, grounded, false, hit, problem)
}

/// What the judge reads as the request of a case.
fn judged_request(request: &Value) -> String {
    match request["message"].as_str() {
        Some(m) => format!("An eco-friendly challenge for: {m}"),
        None => format!(
            "Eco-friendly challenges in category {} for someone working {} in a {} area",
            request["category"], request["workType"], request["location"]
        ),
    }
}

/// The judge's grade of each challenge in `answer`: 0 for one outside the catalog.
async fn grade(
    judge: &Judge,
    request: &Value,
    answer: &Value,
    titles: &BTreeSet<String>,
) -> anyhow::Result<Vec<u8>> {
    let mut scores = Vec::new();
    for c in answer["challenges"].as_array().into_iter().flatten() {
        let title = c["title"].as_str().unwrap_or("");
        if !titles.contains(title) {
            scores.push(MISSING_ITEM_SCORE);
            continue;
        }
        let item = format!("{title} — {}", c["description"].as_str().unwrap_or(""));
        scores.push(judge.score(&judged_request(request), &item).await?);
    }
    Ok(scores)
}

/// The control of case `n` whose answer is `answer`: a catalog challenge in none of the
/// answer's categories (`title — description`).
fn control(items: &[Value], n: usize, answer: &Value) -> Option<String> {
    let answered: BTreeSet<&str> = answer["challenges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["category"].as_str())
        .collect();
    let others: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["tags"]["category"]
                .as_str()
                .is_some_and(|c| !answered.contains(c))
        })
        .collect();
    let item = others.get(control_index(n, others.len()))?;
    Some(format!(
        "{} — {}",
        item["title"].as_str()?,
        item["description"].as_str().unwrap_or("")
    ))
}

/// Runs every case one at a time against `url` (sprout's base URL), grading each challenge
/// with `judge` when there is one.
pub async fn run(
    url: &str,
    api_key: Option<&str>,
    cases: &[Value],
    judge: Option<&Judge>,
) -> anyhow::Result<Vec<CaseResult>> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let items = super::catalog_items(&http, url, api_key, "eco").await?;
    let titles: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i["title"].as_str().map(str::to_string))
        .collect();
    let mut out = Vec::with_capacity(cases.len());
    for (n, case) in cases.iter().enumerate() {
        let base = case.get("kind").and_then(Value::as_str) == Some("base-info")
            || case.get("location").is_some();
        let (path, request) = if base {
            (
                "base-info",
                json!({"sessionId": case.get("sessionId"), "location": case["location"], "workType": case["workType"], "category": case["category"]}),
            )
        } else {
            (
                "free-text",
                json!({"sessionId": case.get("sessionId"), "message": case["message"]}),
            )
        };
        let expected = if base {
            None
        } else {
            case["category"].as_str().map(str::to_string)
        };
        let t = Instant::now();
        let r = http
            .post(format!("{url}/ai/chatbot/recommendation/{path}"))
            .json(&request)
            .send()
            .await?;
        let status = r.status().as_u16();
        let tokens = Tokens::from_headers(r.headers());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let latency_s = t.elapsed().as_secs_f64();
        let (judge_scores, judge_control) = match judge {
            Some(j) if body["data"]["challenges"].is_array() => {
                let scores = grade(j, &request, &body["data"], &titles).await?;
                let control = match control(&items, n, &body["data"]) {
                    Some(c) => Some(j.score(&judged_request(&request), &c).await?),
                    None => None,
                };
                (scores, control)
            }
            _ => (Vec::new(), None),
        };
        let (valid, grounded, off, hit, problem) = check(&body, &titles, expected.as_deref());
        let descriptions = descriptions(&body["data"], &request, &items);
        out.push(CaseResult {
            lang: case["lang"].as_str().unwrap_or("").to_string(),
            expected_category: expected,
            request,
            status,
            valid: valid && status == 200,
            grounded,
            off_topic_answer: off,
            category_hit: hit,
            latency_s,
            answer: body["data"].clone(),
            problem,
            tokens,
            judge_scores,
            judge_control,
            descriptions,
        });
        let last = out.last_mut().expect("just pushed");
        // An off-topic case is answered right by the fallback; an on-topic one by challenges.
        let off_expected = !base && case["category"].is_null();
        if off_expected != last.off_topic_answer {
            last.problem.get_or_insert_with(|| {
                if off_expected {
                    "expected the off-topic answer".into()
                } else {
                    "answered off-topic".into()
                }
            });
        }
    }
    Ok(out)
}

/// Sums the results up.
pub fn summarize(results: &[CaseResult], cases: &[Value]) -> Summary {
    let mut s = Summary {
        cases: results.len(),
        ..Default::default()
    };
    for (r, c) in results.iter().zip(cases) {
        s.valid += usize::from(r.valid);
        s.grounded += usize::from(r.grounded);
        let free = c.get("message").is_some();
        if free && c["category"].is_null() {
            s.off_topic_cases += 1;
            s.off_topic_caught += usize::from(r.off_topic_answer);
        } else if free {
            s.on_topic_cases += 1;
            s.category_hits += usize::from(r.category_hit == Some(true));
            s.false_off_topic += usize::from(r.off_topic_answer);
        }
    }
    let lat: Vec<f64> = results.iter().map(|r| r.latency_s).collect();
    s.latency_p50_s = percentile(&lat, 0.5);
    s.latency_p90_s = percentile(&lat, 0.9);
    s.tokens = mean_tokens(results.iter().map(|r| &r.tokens));
    s.judge_mean = mean(
        results
            .iter()
            .flat_map(|r| r.judge_scores.iter().map(|&g| f64::from(g))),
    );
    for r in results {
        s.descriptions.total += r.descriptions.total;
        s.descriptions.from_catalog += r.descriptions.from_catalog;
        s.descriptions.echo_request += r.descriptions.echo_request;
    }
    s.judge_control_mean = mean(
        results
            .iter()
            .filter_map(|r| r.judge_control.map(f64::from)),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_counted_as_the_catalogs_or_as_echoes() {
        let items = vec![
            json!({"title": "텀블러 쓰기", "description": "일회용 컵 대신 텀블러를 씁니다."}),
            json!({"title": "장바구니 쓰기", "description": "비닐봉지 대신 장바구니를 씁니다."}),
        ];
        let request = json!({"message": "일회용 컵을 덜 쓰고 싶어요"});
        let answer = json!({"challenges": [
            {"title": "텀블러 쓰기", "description": "일회용 컵 대신 텀블러를 씁니다."},
            {"title": "장바구니 쓰기", "description": "이 챌린지는 일회용 컵을 덜 쓰고 싶어요입니다."},
            {"title": "없는 것", "description": "아무 말입니다."},
        ]});
        let d = descriptions(&answer, &request, &items);
        assert_eq!(
            d,
            Descriptions {
                total: 3,
                from_catalog: 1,
                echo_request: 1
            }
        );
    }
}
