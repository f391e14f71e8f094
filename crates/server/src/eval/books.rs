//! `sprout eval books`: the seed team's evaluation of the book recommender as a command. Each
//! case (a JSON line) holds the five answers, optionally a user (`userId` with `history` and
//! `preferences` files, uploaded before the case runs) and a `relevance` file of graded books;
//! each runs once per method. Per case: the three books, whether each exists in the served
//! `books` catalog, already-read and avoided-topic violations, latency, tokens (the
//! `x-sprout-usage` header), the graded relevance (mean grade and NDCG@3 of the three books in
//! their order) and, with a judge, a 0–5 grade per book (0 for one that does not exist).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use super::judge::{control_index, Judge, MISSING_ITEM_SCORE};
use super::{mean, mean_tokens, MeanTokens, Tokens};
use crate::books::validate::ANSWER_FIELDS;

/// A case with its files read.
#[derive(Debug, Clone)]
pub struct BookCase {
    pub name: String,
    /// The five answers.
    pub answers: Value,
    pub user_id: Option<String>,
    pub history: Option<Value>,
    pub preferences: Option<Value>,
    /// Normalized title → grade (1–5).
    pub relevance: BTreeMap<String, f64>,
}

/// A title as the checks compare it: whitespace collapsed.
pub fn normalize_title(title: &str) -> String {
    title.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_json(dir: &Path, path: &str) -> anyhow::Result<Value> {
    let full = dir.join(path);
    let text = std::fs::read_to_string(&full)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", full.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", full.display()))
}

/// Reads the cases of a file; `history`, `preferences` and `relevance` paths are relative to
/// `dir` (the case file's directory).
pub fn load_cases(text: &str, dir: &Path) -> anyhow::Result<Vec<BookCase>> {
    let mut out = Vec::new();
    for (i, raw) in super::parse_cases(text)?.into_iter().enumerate() {
        let line = i + 1;
        let mut answers = serde_json::Map::new();
        for f in ANSWER_FIELDS {
            let v = raw[f]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("case {line}: {f} must be a string"))?;
            answers.insert(f.into(), json!(v));
        }
        let file = |k: &str| -> anyhow::Result<Option<Value>> {
            raw[k].as_str().map(|p| read_json(dir, p)).transpose()
        };
        let relevance = file("relevance")?
            .map(|v| {
                v["recommended_books_relevance"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| {
                        Some((
                            normalize_title(b["title"].as_str()?),
                            b["relevance_score"].as_f64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(BookCase {
            name: raw["name"].as_str().unwrap_or("").to_string(),
            answers: Value::Object(answers),
            user_id: raw["userId"].as_str().map(str::to_string),
            history: file("history")?,
            preferences: file("preferences")?,
            relevance,
        });
    }
    Ok(out)
}

/// One case under one method, and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct BookResult {
    pub case: String,
    pub method: u8,
    pub status: u16,
    /// `title — author` of each book, in order.
    pub books: Vec<String>,
    /// Books that exist in the catalog.
    pub existing: usize,
    /// Books the user has read.
    pub already_read: usize,
    /// Books whose title names one of the user's avoided topics.
    pub avoided: usize,
    pub latency_s: f64,
    pub tokens: Option<Tokens>,
    /// Candidates the server chose among (its `candidates` field), when it says.
    pub candidates: Option<u64>,
    /// Mean grade of the three books (0 for an ungraded one), when the case has grades.
    pub mean_grade: Option<f64>,
    /// NDCG@3 of the three books in their order against the best order of the graded books
    /// that could be recommended (in the catalog, not read), when there are any.
    pub ndcg3: Option<f64>,
    /// Graded books that could be recommended at all (in the catalog, not read).
    pub recommendable_graded: Option<usize>,
    pub judge_scores: Vec<u8>,
    /// The judge's grade of this case's control: a catalog book picked at random.
    pub judge_control: Option<u8>,
    pub problem: Option<String>,
}

/// NDCG@k of `ranked` grades against the best order of every known grade.
pub fn ndcg(ranked: &[f64], all_grades: &[f64], k: usize) -> f64 {
    let dcg = |g: &[f64]| -> f64 {
        g.iter()
            .take(k)
            .enumerate()
            .map(|(i, &r)| (2f64.powf(r) - 1.0) / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal = all_grades.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let best = dcg(&ideal);
    if best == 0.0 {
        0.0
    } else {
        dcg(ranked) / best
    }
}

fn read_titles(history: &Option<Value>) -> BTreeSet<String> {
    history
        .as_ref()
        .and_then(|h| h["read_books"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| b["title"].as_str().map(normalize_title))
        .collect()
}

fn avoided_topics(preferences: &Option<Value>) -> Vec<String> {
    preferences
        .as_ref()
        .and_then(|p| p["preferences"]["avoid_topics"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .filter(|t| !t.trim().is_empty())
        .collect()
}

/// Whether `title` (normalized) is one of the `read` titles, or its main title (before " : ")
/// is, as the server matches a history that leaves out subtitles.
fn is_read(title: &str, read: &BTreeSet<String>) -> bool {
    let main = |t: &str| t.split(" : ").next().unwrap_or(t).trim().to_string();
    read.contains(title) || read.iter().any(|r| main(r) == main(title))
}

/// What the judge reads as the request of a case.
fn judged_request(case: &BookCase) -> String {
    let a = &case.answers;
    let mut s = format!(
        "A book for a reader. Mood: {}. Wants to feel: {}. Occupation: {}. Reading when: {}. Wants: {}.",
        a["user_emotion"].as_str().unwrap_or(""),
        a["desired_emotional_effect"].as_str().unwrap_or(""),
        a["occupation"].as_str().unwrap_or(""),
        a["reading_context"].as_str().unwrap_or(""),
        a["focus_level"].as_str().unwrap_or(""),
    );
    if let Some(p) = &case.preferences {
        s.push_str(&format!(" Preferences: {}", p["preferences"]));
    }
    s
}

/// Uploads a case's user files.
async fn upload_user(http: &reqwest::Client, url: &str, case: &BookCase) -> anyhow::Result<()> {
    let Some(id) = &case.user_id else {
        return Ok(());
    };
    for (what, body) in [
        ("history", &case.history),
        ("preferences", &case.preferences),
    ] {
        if let Some(body) = body {
            let r = http
                .put(format!("{url}/api/users/{id}/{what}"))
                .json(body)
                .send()
                .await?;
            if !r.status().is_success() {
                anyhow::bail!(
                    "PUT /api/users/{id}/{what} answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// The served `books` catalog as the checks need it.
struct ServedBooks {
    /// Normalized titles.
    titles: BTreeSet<String>,
    /// `title by author` of every book, in catalog order (the controls).
    listing: Vec<(String, String)>,
}

async fn served_books(
    http: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
) -> anyhow::Result<ServedBooks> {
    let mut books = ServedBooks {
        titles: BTreeSet::new(),
        listing: Vec::new(),
    };
    for i in super::catalog_items(http, url, api_key, "books").await? {
        let Some(title) = i["title"].as_str() else {
            continue;
        };
        let author = i["author"]
            .as_str()
            .or_else(|| i["tags"]["author"].as_str())
            .unwrap_or("");
        books.titles.insert(normalize_title(title));
        books.listing.push((title.to_string(), author.to_string()));
    }
    Ok(books)
}

/// Runs every case under every method in `methods`, one request at a time.
pub async fn run(
    url: &str,
    api_key: Option<&str>,
    cases: &[BookCase],
    methods: &[u8],
    judge: Option<&Judge>,
) -> anyhow::Result<Vec<BookResult>> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()?;
    let catalog = served_books(&http, url, api_key).await?;
    let mut out = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        upload_user(&http, url, case).await?;
        let read = read_titles(&case.history);
        let avoid = avoided_topics(&case.preferences);
        for &method in methods {
            let mut body = case.answers.clone();
            body["method"] = json!(method);
            if let Some(id) = &case.user_id {
                body["userId"] = json!(id);
            }
            let t = Instant::now();
            let r = http
                .post(format!("{url}/api/recommend-books"))
                .json(&body)
                .send()
                .await?;
            let status = r.status().as_u16();
            let tokens = Tokens::from_headers(r.headers());
            let answer: Value = r.json().await.unwrap_or(Value::Null);
            let latency_s = t.elapsed().as_secs_f64();
            out.push(
                score(
                    case,
                    method,
                    status,
                    &answer,
                    latency_s,
                    tokens,
                    (&catalog.titles, &read, &avoid),
                    judge,
                )
                .await?,
            );
            if let (Some(j), Some(last)) = (judge, out.last_mut()) {
                let control = catalog.listing.get(control_index(
                    n * 2 + usize::from(method),
                    catalog.listing.len(),
                ));
                if let Some((title, author)) = control {
                    let item = format!("{title} by {author}.");
                    last.judge_control = Some(j.score(&judged_request(case), &item).await?);
                }
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn score(
    case: &BookCase,
    method: u8,
    status: u16,
    answer: &Value,
    latency_s: f64,
    tokens: Option<Tokens>,
    (catalog, read, avoid): (&BTreeSet<String>, &BTreeSet<String>, &[String]),
    judge: Option<&Judge>,
) -> anyhow::Result<BookResult> {
    let books: Vec<&Value> = answer["books"].as_array().into_iter().flatten().collect();
    let titles: Vec<String> = books
        .iter()
        .map(|b| normalize_title(b["title"].as_str().unwrap_or("")))
        .collect();
    let existing = titles.iter().filter(|t| catalog.contains(*t)).count();
    let already_read = titles.iter().filter(|t| is_read(t, read)).count();
    let avoided = titles
        .iter()
        .filter(|t| avoid.iter().any(|a| t.contains(a.as_str())))
        .count();
    let (mean_grade, ndcg3, recommendable_graded) = if case.relevance.is_empty() {
        (None, None, None)
    } else {
        // A book already read earns nothing, whatever its grade.
        let grades: Vec<f64> = titles
            .iter()
            .map(|t| match is_read(t, read) {
                true => 0.0,
                false => case.relevance.get(t).copied().unwrap_or(0.0),
            })
            .collect();
        // A graded book the user has read, or one the catalog lacks, can never be recommended:
        // the best order is that of the others.
        let possible: Vec<f64> = case
            .relevance
            .iter()
            .filter(|(t, _)| catalog.contains(*t) && !is_read(t, read))
            .map(|(_, &g)| g)
            .collect();
        let nd = (!possible.is_empty()).then(|| ndcg(&grades, &possible, 3));
        (mean(grades.iter().copied()), nd, Some(possible.len()))
    };
    let mut judge_scores = Vec::new();
    if let Some(j) = judge {
        let request = judged_request(case);
        for (b, t) in books.iter().zip(&titles) {
            if !catalog.contains(t) {
                judge_scores.push(MISSING_ITEM_SCORE);
                continue;
            }
            let item = format!(
                "{} by {}. Why recommended: {} {}",
                b["title"].as_str().unwrap_or(""),
                b["author"].as_str().unwrap_or(""),
                b["reason"].as_str().unwrap_or(""),
                b["benefit"].as_str().unwrap_or(""),
            );
            judge_scores.push(j.score(&request, &item).await?);
        }
    }
    let distinct: BTreeSet<&String> = titles.iter().collect();
    let problem = if status != 200 {
        Some(format!("status {status}: {answer}"))
    } else if titles.len() != 3 || distinct.len() != 3 {
        Some(format!(
            "{} books, {} distinct",
            titles.len(),
            distinct.len()
        ))
    } else if existing < 3 {
        Some("a book outside the catalog".into())
    } else if already_read > 0 {
        Some("a book the user has read".into())
    } else if avoided > 0 {
        Some("a book on an avoided topic".into())
    } else if !answer["result"].as_str().is_some_and(|r| r.contains("**[")) {
        Some("no markdown result".into())
    } else {
        None
    };
    Ok(BookResult {
        case: case.name.clone(),
        method,
        status,
        books: books
            .iter()
            .map(|b| {
                format!(
                    "{} — {}",
                    b["title"].as_str().unwrap_or(""),
                    b["author"].as_str().unwrap_or("")
                )
            })
            .collect(),
        existing,
        already_read,
        avoided,
        latency_s,
        tokens,
        candidates: answer["candidates"].as_u64(),
        mean_grade,
        ndcg3,
        recommendable_graded,
        judge_scores,
        judge_control: None,
        problem,
    })
}

/// One method's row of the seed's comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct MethodSummary {
    pub method: u8,
    pub cases: usize,
    /// Cases with three distinct existing books, none read, none avoided.
    pub clean: usize,
    pub books_outside_catalog: usize,
    pub already_read: usize,
    pub avoided: usize,
    pub candidates: Option<f64>,
    pub judge_mean: Option<f64>,
    /// The judge's mean grade of the controls.
    pub judge_control_mean: Option<f64>,
    pub mean_grade: Option<f64>,
    pub ndcg3: Option<f64>,
    pub tokens: Option<MeanTokens>,
    pub latency_mean_s: f64,
}

/// The per-method summary, in `methods`' order.
pub fn summarize(results: &[BookResult], methods: &[u8]) -> Vec<MethodSummary> {
    methods
        .iter()
        .map(|&m| {
            let rs: Vec<&BookResult> = results.iter().filter(|r| r.method == m).collect();
            MethodSummary {
                method: m,
                cases: rs.len(),
                clean: rs.iter().filter(|r| r.problem.is_none()).count(),
                books_outside_catalog: rs.iter().map(|r| r.books.len() - r.existing).sum(),
                already_read: rs.iter().map(|r| r.already_read).sum(),
                avoided: rs.iter().map(|r| r.avoided).sum(),
                candidates: mean(rs.iter().filter_map(|r| r.candidates.map(|c| c as f64))),
                judge_mean: mean(
                    rs.iter()
                        .flat_map(|r| r.judge_scores.iter().map(|&g| f64::from(g))),
                ),
                judge_control_mean: mean(rs.iter().filter_map(|r| r.judge_control.map(f64::from))),
                mean_grade: mean(rs.iter().filter_map(|r| r.mean_grade)),
                ndcg3: mean(rs.iter().filter_map(|r| r.ndcg3)),
                tokens: mean_tokens(rs.iter().map(|r| &r.tokens)),
                latency_mean_s: mean(rs.iter().map(|r| r.latency_s)).unwrap_or(0.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_is_one_for_the_best_order_and_less_otherwise() {
        let all = [5.0, 4.5, 4.0, 3.0];
        assert!((ndcg(&[5.0, 4.5, 4.0], &all, 3) - 1.0).abs() < 1e-12);
        let worse = ndcg(&[4.0, 4.5, 5.0], &all, 3);
        assert!(worse < 1.0 && worse > 0.5, "{worse}");
        assert_eq!(ndcg(&[0.0, 0.0, 0.0], &all, 3), 0.0);
        assert_eq!(ndcg(&[1.0], &[], 3), 0.0);
    }

    #[test]
    fn cases_read_their_user_files_relative_to_the_case_file() {
        let dir = std::env::temp_dir().join(format!("sprout-book-cases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("h.json"),
            r#"{"read_books":[{"title":"읽은  책 : 부제"}]}"#,
        )
        .expect("write");
        std::fs::write(
            dir.join("r.json"),
            r#"{"recommended_books_relevance":[{"title":"좋은 책","relevance_score":4.5}]}"#,
        )
        .expect("write");
        let line = r#"{"name":"t","user_emotion":"불안함","desired_emotional_effect":"위로","occupation":"직장인","reading_context":"잠들기 전","focus_level":"가볍게","userId":"u1","history":"h.json","relevance":"r.json"}"#;
        let cases = load_cases(line, &dir).expect("a case");
        assert_eq!(cases[0].user_id.as_deref(), Some("u1"));
        assert!(read_titles(&cases[0].history).contains("읽은 책 : 부제"));
        assert_eq!(cases[0].relevance.get("좋은 책"), Some(&4.5));
        let missing = load_cases(r#"{"name":"x","user_emotion":"a"}"#, &dir);
        assert!(missing
            .expect_err("a missing answer")
            .to_string()
            .contains("desired_emotional_effect"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn violations_are_counted_per_book() {
        let case = BookCase {
            name: "c".into(),
            answers: json!({}),
            user_id: None,
            history: None,
            preferences: None,
            relevance: BTreeMap::from([("가".to_string(), 5.0), ("나".to_string(), 3.0)]),
        };
        let catalog: BTreeSet<String> = ["가", "나", "우울한 날"].map(String::from).into();
        let read: BTreeSet<String> = ["나".to_string()].into();
        let avoid = vec!["우울".to_string()];
        let answer = json!({"result": "1. **[가]** - x", "books": [
            {"title": "가", "author": "a"}, {"title": "나", "author": "b"},
            {"title": "우울한 날", "author": "c"}]});
        let r = score(
            &case,
            1,
            200,
            &answer,
            1.0,
            None,
            (&catalog, &read, &avoid),
            None,
        )
        .await
        .expect("scored");
        assert_eq!((r.existing, r.already_read, r.avoided), (3, 1, 1));
        assert_eq!(r.problem.as_deref(), Some("a book the user has read"));
        // 나 is read: it earns nothing, and the best possible answer holds only 가.
        assert!((r.mean_grade.expect("graded") - 5.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.recommendable_graded, Some(1));
        assert!((r.ndcg3.expect("graded") - 1.0).abs() < 1e-12);
    }
}
