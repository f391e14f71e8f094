//! Retrieval evaluation: recall@k and MRR of any ranking function over a labelled query set.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::catalog::Catalog;

/// One labelled query: what a user asks and the ids of the items that truly answer it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalQuery {
    /// The user's words.
    pub query: String,
    /// Language of the query (`ko`, `en`, `zh`), for per-language figures.
    pub lang: String,
    /// Category code of the intended items, if the query has one.
    #[serde(default)]
    pub category: Option<String>,
    /// Ids of the relevant items (at least one).
    pub relevant_ids: Vec<String>,
}

/// Why a query set could not be loaded or does not fit a catalog.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A line that is not a valid query object.
    #[error("line {line}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// serde_json's message.
        message: String,
    },
    /// A query without relevant ids, or with an empty query text.
    #[error("line {line}: {field} is empty")]
    Empty {
        /// 1-based line.
        line: usize,
        /// `query` or `relevant_ids`.
        field: &'static str,
    },
    /// A relevant id that is not in the catalog.
    #[error("query {query:?} names {id:?}, which catalog {catalog} does not have")]
    UnknownId {
        /// The query text.
        query: String,
        /// The id.
        id: String,
        /// The catalog's name.
        catalog: String,
    },
}

/// Parses a JSONL query set (one [`EvalQuery`] per non-blank line).
pub fn parse_queries(text: &str) -> Result<Vec<EvalQuery>, EvalError> {
    let mut queries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let query: EvalQuery = serde_json::from_str(line).map_err(|error| EvalError::Json {
            line: line_number,
            message: error.to_string(),
        })?;
        if query.query.trim().is_empty() {
            return Err(EvalError::Empty {
                line: line_number,
                field: "query",
            });
        }
        if query.relevant_ids.is_empty() {
            return Err(EvalError::Empty {
                line: line_number,
                field: "relevant_ids",
            });
        }
        queries.push(query);
    }
    Ok(queries)
}

/// Checks that every relevant id names an item of `catalog`.
pub fn check_ids(queries: &[EvalQuery], catalog: &Catalog) -> Result<(), EvalError> {
    for query in queries {
        for id in &query.relevant_ids {
            if catalog.index_of(id).is_none() {
                return Err(EvalError::UnknownId {
                    query: query.query.clone(),
                    id: id.clone(),
                    catalog: catalog.name().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Recall@k and MRR over a group of queries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metrics {
    /// Queries in the group.
    pub queries: usize,
    /// Share of queries with a relevant id in the top k.
    pub recall_at_k: f64,
    /// Mean over queries of 1 / rank of the first relevant id (0 when none is returned).
    pub mrr: f64,
}

/// Metrics overall and per query language, at one cutoff `k`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// The recall cutoff.
    pub k: usize,
    /// All queries together.
    pub overall: Metrics,
    /// Per [`EvalQuery::lang`].
    pub by_lang: BTreeMap<String, Metrics>,
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = std::iter::once(("all", &self.overall)).chain(
            self.by_lang
                .iter()
                .map(|(lang, metrics)| (lang.as_str(), metrics)),
        );
        for (name, metrics) in groups {
            writeln!(
                f,
                "{name:>4}: n={:<3} recall@{}={:.3} mrr={:.3}",
                metrics.queries, self.k, metrics.recall_at_k, metrics.mrr
            )?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Sums {
    queries: usize,
    hits: usize,
    reciprocal_ranks: f64,
}

impl Sums {
    fn add(&mut self, hit: bool, reciprocal_rank: f64) {
        self.queries += 1;
        self.hits += usize::from(hit);
        self.reciprocal_ranks += reciprocal_rank;
    }

    fn metrics(&self) -> Metrics {
        if self.queries == 0 {
            return Metrics::default();
        }
        Metrics {
            queries: self.queries,
            recall_at_k: self.hits as f64 / self.queries as f64,
            mrr: self.reciprocal_ranks / self.queries as f64,
        }
    }
}

/// Scores `rank` (query → ranked item ids, best first) on `queries`: a query counts for
/// recall@k when any relevant id is among the first `k`; MRR looks at the whole ranking
/// returned, so return as deep a ranking as the MRR cutoff wanted (e.g. 10).
pub fn evaluate<F>(queries: &[EvalQuery], k: usize, mut rank: F) -> EvalReport
where
    F: FnMut(&EvalQuery) -> Vec<String>,
{
    let mut overall = Sums::default();
    let mut by_lang: BTreeMap<String, Sums> = BTreeMap::new();
    for query in queries {
        let relevant: HashSet<&str> = query.relevant_ids.iter().map(String::as_str).collect();
        let ranking = rank(query);
        let first = ranking.iter().position(|id| relevant.contains(id.as_str()));
        let hit = first.is_some_and(|position| position < k);
        let reciprocal_rank = first.map_or(0.0, |position| 1.0 / (position + 1) as f64);
        overall.add(hit, reciprocal_rank);
        by_lang
            .entry(query.lang.clone())
            .or_default()
            .add(hit, reciprocal_rank);
    }
    EvalReport {
        k,
        overall: overall.metrics(),
        by_lang: by_lang
            .into_iter()
            .map(|(lang, sums)| (lang, sums.metrics()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(lang: &str, relevant: &[&str]) -> EvalQuery {
        EvalQuery {
            query: "q".into(),
            lang: lang.into(),
            category: None,
            relevant_ids: relevant.iter().map(|id| id.to_string()).collect(),
        }
    }

    #[test]
    fn recall_and_mrr_by_hand() {
        let queries = [
            query("ko", &["a"]),      // rank 1
            query("ko", &["x", "c"]), // rank 3
            query("en", &["z"]),      // missing
        ];
        let ranking = || vec!["a".to_string(), "b".into(), "c".into()];
        let report = evaluate(&queries, 2, |_| ranking());
        assert_eq!(report.overall.queries, 3);
        assert!((report.overall.recall_at_k - 1.0 / 3.0).abs() < 1e-12);
        assert!((report.overall.mrr - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(report.by_lang["ko"].queries, 2);
        assert!((report.by_lang["ko"].recall_at_k - 0.5).abs() < 1e-12);
        assert_eq!(report.by_lang["en"].mrr, 0.0);
        let at_three = evaluate(&queries, 3, |_| ranking());
        assert!((at_three.overall.recall_at_k - 2.0 / 3.0).abs() < 1e-12);
        assert!(report.to_string().contains("recall@2=0.333"));
    }

    #[test]
    fn empty_sets_give_zero_metrics() {
        let report = evaluate(&[], 5, |_| Vec::new());
        assert_eq!(report.overall, Metrics::default());
        assert!(report.by_lang.is_empty());
    }

    #[test]
    fn query_sets_are_parsed_and_checked() {
        let text = "{\"query\":\"텀블러\",\"lang\":\"ko\",\"category\":\"ZERO_WASTE\",\"relevant_ids\":[\"eco-zero-waste-01\"]}\n\n";
        let queries = parse_queries(text).unwrap();
        assert_eq!(queries.len(), 1);
        assert_eq!(queries[0].category.as_deref(), Some("ZERO_WASTE"));
        check_ids(&queries, &Catalog::eco()).unwrap();

        let unknown =
            parse_queries("{\"query\":\"q\",\"lang\":\"ko\",\"relevant_ids\":[\"nope\"]}").unwrap();
        let error = check_ids(&unknown, &Catalog::eco()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "query \"q\" names \"nope\", which catalog eco does not have"
        );
        let error =
            parse_queries("\n{\"query\":\"q\",\"lang\":\"ko\",\"relevant_ids\":[]}").unwrap_err();
        assert_eq!(error.to_string(), "line 2: relevant_ids is empty");
        let error =
            parse_queries("{\"query\":\"q\",\"lang\":\"ko\",\"relevant_ids\":[\"a\"],\"x\":1}")
                .unwrap_err();
        assert!(matches!(error, EvalError::Json { line: 1, .. }), "{error}");
    }
}
