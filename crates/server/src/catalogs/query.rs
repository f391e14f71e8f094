//! The query strings of the catalog routes, parsed into checked requests: every parameter known,
//! given at most once (except `filter`), in range, or a [`QueryError`] naming it.

use sprout_recommend::TagFilter;

/// Items per page when `limit` is not given.
pub const DEFAULT_PAGE_ITEMS: usize = 100;
/// Largest `limit`.
pub const MAX_PAGE_ITEMS: usize = 1000;
/// Results when `k` is not given.
pub const DEFAULT_SEARCH_RESULTS: usize = 5;
/// Largest `k`.
pub const MAX_SEARCH_RESULTS: usize = 100;
/// Longest `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most `filter` parameters in one search.
pub const MAX_FILTERS: usize = 16;

/// A query string the catalog routes refuse; [`QueryError::param`] names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter the route does not take.
    #[error("unknown query parameter `{param}` (this route takes {expected})")]
    Unknown {
        /// The parameter.
        param: String,
        /// The ones it takes, for the message.
        expected: &'static str,
    },
    /// A single-valued parameter given more than once.
    #[error("query parameter `{0}` is given more than once")]
    Repeated(&'static str),
    /// A value that is not a non-negative integer.
    #[error("`{param}` must be a non-negative integer, got {value:?}")]
    NotANumber {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: String,
    },
    /// A number outside its range.
    #[error("`{param}` must be from {min} to {max}, got {value}")]
    OutOfRange {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A required parameter that is absent.
    #[error("`{0}` is required")]
    Missing(&'static str),
    /// A parameter that is empty or only whitespace.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A query longer than [`MAX_QUERY_CHARS`].
    #[error("`q` is {chars} characters long, more than the {max} allowed")]
    TooLong {
        /// Its length.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A filter that is not `key:value` or `key=value` with both parts non-empty.
    #[error("`filter` must be key:value or key=value (e.g. category:ZERO_WASTE), got {0:?}")]
    BadFilter(String),
    /// More than [`MAX_FILTERS`] filters.
    #[error("at most {max} `filter` parameters are allowed, got {got}")]
    TooManyFilters {
        /// The limit.
        max: usize,
        /// How many were given.
        got: usize,
    },
}

impl QueryError {
    /// The parameter the error is about.
    pub fn param(&self) -> &str {
        match self {
            QueryError::Unknown { param, .. } => param,
            QueryError::Repeated(param)
            | QueryError::NotANumber { param, .. }
            | QueryError::OutOfRange { param, .. }
            | QueryError::Missing(param)
            | QueryError::Empty(param) => param,
            QueryError::TooLong { .. } => "q",
            QueryError::BadFilter(_) | QueryError::TooManyFilters { .. } => "filter",
        }
    }
}

/// A checked `GET /v1/catalogs/{name}/items` query: `offset` (default 0), `limit` (1 to 1000,
/// default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Items skipped; past the end gives an empty page.
    pub offset: usize,
    /// Items returned at most.
    pub limit: usize,
}

impl PageRequest {
    /// Parses the raw query string (None when the URL has none).
    pub fn parse(raw: Option<&str>) -> Result<PageRequest, QueryError> {
        let (mut offset, mut limit) = (None, None);
        for (key, value) in pairs(raw) {
            match key.as_str() {
                "offset" => set_once(&mut offset, "offset", value)?,
                "limit" => set_once(&mut limit, "limit", value)?,
                _ => {
                    return Err(QueryError::Unknown {
                        param: key,
                        expected: "offset and limit",
                    })
                }
            }
        }
        Ok(PageRequest {
            offset: number(offset, "offset", 0, 0, usize::MAX)?,
            limit: number(limit, "limit", DEFAULT_PAGE_ITEMS, 1, MAX_PAGE_ITEMS)?,
        })
    }
}

/// A checked `GET /v1/catalogs/{name}/search` query: `q` (required, non-empty), `k` (1 to 100,
/// default 5), `filter` (repeatable, `key:value` or `key=value`; all must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// The query text, trimmed.
    pub q: String,
    /// Results returned at most.
    pub k: usize,
    /// Tag filters every result matches.
    pub filters: Vec<TagFilter>,
}

impl SearchRequest {
    /// Parses the raw query string (None when the URL has none).
    pub fn parse(raw: Option<&str>) -> Result<SearchRequest, QueryError> {
        let (mut q, mut k, mut filters) = (None, None, Vec::new());
        for (key, value) in pairs(raw) {
            match key.as_str() {
                "q" => set_once(&mut q, "q", value)?,
                "k" => set_once(&mut k, "k", value)?,
                "filter" => filters.push(value),
                _ => {
                    return Err(QueryError::Unknown {
                        param: key,
                        expected: "q, k and filter",
                    })
                }
            }
        }
        let q = q.ok_or(QueryError::Missing("q"))?.trim().to_string();
        if q.is_empty() {
            return Err(QueryError::Empty("q"));
        }
        let chars = q.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong {
                chars,
                max: MAX_QUERY_CHARS,
            });
        }
        if filters.len() > MAX_FILTERS {
            return Err(QueryError::TooManyFilters {
                max: MAX_FILTERS,
                got: filters.len(),
            });
        }
        Ok(SearchRequest {
            q,
            k: number(k, "k", DEFAULT_SEARCH_RESULTS, 1, MAX_SEARCH_RESULTS)?,
            filters: filters
                .iter()
                .map(|f| parse_filter(f))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A tag filter written `key:value` or `key=value` (split at the first `:` or `=`, both parts
/// trimmed and non-empty). The CLI's `--filter` takes the same forms.
pub fn parse_filter(text: &str) -> Result<TagFilter, QueryError> {
    let bad = || QueryError::BadFilter(text.to_string());
    let at = text.find([':', '=']).ok_or_else(bad)?;
    let (key, value) = (text[..at].trim(), text[at + 1..].trim());
    if key.is_empty() || value.is_empty() {
        return Err(bad());
    }
    Ok(TagFilter::new(key, value))
}

/// The decoded `key=value` pairs of a query string (`+` is a space, `%XX` decoded).
fn pairs(raw: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
}

fn set_once(
    slot: &mut Option<String>,
    param: &'static str,
    value: String,
) -> Result<(), QueryError> {
    if slot.replace(value).is_some() {
        return Err(QueryError::Repeated(param));
    }
    Ok(())
}

/// The number in `value` (or `default` when absent), checked against `min..=max`.
fn number(
    value: Option<String>,
    param: &'static str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, QueryError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let trimmed = value.trim();
    let parsed = match trimmed.parse::<usize>() {
        Ok(parsed) => parsed,
        // All digits yet unparsable: too large for any range here.
        Err(_) if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) => usize::MAX,
        Err(_) => return Err(QueryError::NotANumber { param, value }),
    };
    if parsed < min || parsed > max {
        return Err(QueryError::OutOfRange {
            param,
            value: parsed,
            min,
            max,
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(raw: &str) -> Result<PageRequest, QueryError> {
        PageRequest::parse(Some(raw))
    }

    fn search(raw: &str) -> Result<SearchRequest, QueryError> {
        SearchRequest::parse(Some(raw))
    }

    #[test]
    fn paging_defaults_and_limits() {
        assert_eq!(
            PageRequest::parse(None),
            Ok(PageRequest {
                offset: 0,
                limit: 100
            })
        );
        assert_eq!(
            page("offset=20&limit=1000"),
            Ok(PageRequest {
                offset: 20,
                limit: 1000
            })
        );
        assert_eq!(
            page("limit=1001"),
            Err(QueryError::OutOfRange {
                param: "limit",
                value: 1001,
                min: 1,
                max: 1000
            })
        );
        let error = page("limit=0").unwrap_err();
        assert_eq!(error.to_string(), "`limit` must be from 1 to 1000, got 0");
        assert_eq!(error.param(), "limit");
        for bad in ["-1", "ten", "", "1.5", "0x10"] {
            assert_eq!(
                page(&format!("offset={bad}")),
                Err(QueryError::NotANumber {
                    param: "offset",
                    value: bad.into()
                })
            );
        }
        let huge = page("limit=99999999999999999999999").unwrap_err();
        assert!(matches!(
            huge,
            QueryError::OutOfRange { param: "limit", .. }
        ));
        assert_eq!(page("limit=5&limit=6"), Err(QueryError::Repeated("limit")));
        let unknown = page("page=2").unwrap_err();
        assert_eq!(unknown.param(), "page");
        assert_eq!(
            unknown.to_string(),
            "unknown query parameter `page` (this route takes offset and limit)"
        );
    }

    #[test]
    fn search_needs_a_query_and_bounds_k() {
        let s = search("q=%EB%B6%84%EB%A6%AC%EC%88%98%EA%B1%B0+%ED%95%98%EA%B8%B0").unwrap();
        assert_eq!(
            (s.q.as_str(), s.k, s.filters.len()),
            ("분리수거 하기", 5, 0)
        );
        assert_eq!(SearchRequest::parse(None), Err(QueryError::Missing("q")));
        assert_eq!(search("k=3"), Err(QueryError::Missing("q")));
        assert_eq!(search("q=+++"), Err(QueryError::Empty("q")));
        assert_eq!(search("q=a&k=100").unwrap().k, 100);
        let error = search("q=a&k=101").unwrap_err();
        assert_eq!(
            (error.param(), error.to_string().as_str()),
            ("k", "`k` must be from 1 to 100, got 101")
        );
        assert!(matches!(
            search("q=a&k=0"),
            Err(QueryError::OutOfRange { param: "k", .. })
        ));
        assert!(matches!(
            search("q=a&k=x"),
            Err(QueryError::NotANumber { param: "k", .. })
        ));
        assert_eq!(search("q=a&q=b"), Err(QueryError::Repeated("q")));
        let long = format!("q={}", "가".repeat(MAX_QUERY_CHARS + 1));
        assert_eq!(
            search(&long),
            Err(QueryError::TooLong {
                chars: MAX_QUERY_CHARS + 1,
                max: MAX_QUERY_CHARS
            })
        );
        assert_eq!(search("q=a&top=1").unwrap_err().param(), "top");
    }

    #[test]
    fn filters_take_colon_or_equals_and_repeat() {
        let s =
            search("q=a&filter=category:PLOGGING&filter=locations%3D%EB%8F%84%EC%8B%9C").unwrap();
        assert_eq!(
            s.filters,
            vec![
                TagFilter::new("category", "PLOGGING"),
                TagFilter::new("locations", "도시")
            ]
        );
        // Split at the first separator: the value may hold the other one.
        assert_eq!(parse_filter("url:a=b"), Ok(TagFilter::new("url", "a=b")));
        for bad in ["category", ":x", "category:", " = ", ""] {
            assert_eq!(parse_filter(bad), Err(QueryError::BadFilter(bad.into())));
        }
        assert_eq!(search("q=a&filter=nope").unwrap_err().param(), "filter");
        let many: String = (0..=MAX_FILTERS)
            .map(|i| format!("&filter=k:{i}"))
            .collect();
        assert_eq!(
            search(&format!("q=a{many}")),
            Err(QueryError::TooManyFilters {
                max: MAX_FILTERS,
                got: MAX_FILTERS + 1
            })
        );
    }
}
