//! The book recommender: from a validated request to three catalog books with reasons.
//!
//! Both methods first decide which books may be recommended at all: a title the user has read
//! (normalized title or main title equal, see [`same_book`]) or whose title, subtitle or
//! description mentions an avoided topic (normalized substring, see [`mentions_avoided`]) is
//! never offered to the grammar. Then
//! - method 1 (RAG) builds an enriched query — the five answers, the user's keywords and top
//!   genres, and what the read books most like the answers were about (genres and reviews) —
//!   retrieves candidates from the `books` catalog with hybrid search and lists a few of them
//!   in a short prompt;
//! - method 2 (prompt-only) pastes the whole history and preferences into the prompt and lists
//!   no candidates: the grammar alone holds the model to the allowed catalog titles.
//!
//! Either way the model writes under [`book_grammar`], so every book exists by construction;
//! authors come from the catalog.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{json, Value};
use sprout_engine::chat_template::ChatMessage;
use sprout_engine::grammar::GrammarSpec;
use sprout_engine::sampler::SamplingParams;
use sprout_engine::scheduler::Usage;
use sprout_recommend::books::{
    book_grammar, mentions_avoided, normalize, same_book, usable_title, AnsweredBook, BookPiece,
    BookStream,
};
use sprout_recommend::{Item, Retriever};

use super::error::BooksError;
use super::validate::{Method, RecommendRequest};
use crate::pipeline::{
    self, usage_json, GenerationHandle, GenerationJob, Output, PipelineError, PromptInput,
};
use crate::sessions::users::{ReadingHistory, ReadingPreferences, UserStore};
use crate::state::AppState;

/// Candidates method 1 lists in its prompt.
pub const RAG_CANDIDATES: usize = 6;
/// Hits retrieved before read and avoided books are removed.
const RETRIEVED: usize = 48;
/// Read books whose genres and reviews enrich method 1's query.
const SIMILAR_READ_BOOKS: usize = 3;
/// Discourages the small model from writing one sentence for every book.
const REPETITION_PENALTY: f32 = 1.15;
/// Tokens an answer may take; the grammar bounds it well below this.
const ANSWER_MAX_TOKENS: usize = 1024;

/// The fixed head of every prompt, first so the prefix cache shares it across requests.
/// Short on purpose: the 0.5B model copies an example answer's sentences into every item, and
/// echoes instructions about style ("한 문장으로 짧게…") as reasons; the grammar holds the form.
const SYSTEM: &str = "당신은 독자의 감정과 상황에 맞는 책을 추천하는 사서입니다. 독자에게 가장 알맞은 책 세 권을 골라 추천하세요.";

/// The recommender's resources, built once at startup.
pub struct Books {
    retriever: Arc<Retriever>,
    users: Arc<dyn UserStore>,
}

/// A generation under way.
pub struct Answering {
    /// The generation; dropping it cancels the request.
    pub handle: GenerationHandle,
    stream: BookStream,
    allowed: Vec<String>,
    /// Title → ISBN, for the catalogs that have them.
    isbns: HashMap<String, String>,
    method: Method,
    usage: Option<Usage>,
}

/// A finished recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The markdown, exactly the concatenation of the streamed deltas.
    pub result: String,
    /// The three books, in the answer's order.
    pub books: Vec<AnsweredBook>,
    /// Each book's ISBN, when the catalog has one.
    pub isbns: Vec<Option<String>>,
    /// How the books were found.
    pub method: Method,
    /// The generation's token counts.
    pub usage: Usage,
    /// How many catalog titles the grammar let the model choose among.
    pub candidates: usize,
}

impl Recommendation {
    /// The 200 body: `{"result","books":[{title,author,isbn?,reason,benefit}],"method",
    /// "candidates"}`.
    pub fn body(&self) -> Value {
        let books: Vec<Value> = self
            .books
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut book = json!({"title": b.title, "author": b.author, "reason": b.reason, "benefit": b.benefit});
                if let Some(Some(isbn)) = self.isbns.get(i) {
                    book["isbn"] = Value::String(isbn.clone());
                }
                book
            })
            .collect();
        json!({"result": self.result, "books": books, "method": self.method.number(),
            "candidates": self.candidates})
    }

    /// The `done` event's data: the body plus `usage`.
    pub fn done_data(&self) -> Value {
        let mut body = self.body();
        body["usage"] = usage_json(&self.usage);
        body
    }
}

fn pipeline_error(e: PipelineError) -> BooksError {
    match e {
        PipelineError::Overloaded { retry_after_s, .. } => BooksError::Overloaded { retry_after_s },
        PipelineError::NotReady => BooksError::NotReady { retry_after_s: 5 },
        other => BooksError::ModelFailed {
            detail: other.to_string(),
        },
    }
}

/// What the request knows about its reader.
#[derive(Default)]
struct Reader {
    history: ReadingHistory,
    preferences: ReadingPreferences,
}

impl Reader {
    /// Whether `item` may be recommended to this reader: a usable title, not read, no avoided
    /// topic in its title, subtitle or description.
    fn may_get(&self, item: &Item) -> bool {
        if !usable_title(&item.title) {
            return false;
        }
        if self
            .history
            .read_books
            .iter()
            .any(|read| same_book(&item.title, &read.title))
        {
            return false;
        }
        let avoid = &self.preferences.avoid_topics;
        let subtitle = item.tags.get("subtitle").map(|s| s.values().join(" "));
        let texts = [
            Some(item.title.as_str()),
            subtitle.as_deref(),
            item.description.as_deref(),
        ];
        let clean = texts
            .into_iter()
            .flatten()
            .all(|text| mentions_avoided(text, avoid).is_none());
        clean
    }

    /// The read books most like the answers: character-bigram overlap of the answers and
    /// keywords with each book's title, review and genres, ties to the better rated.
    fn similar_read_books(&self, answers: &str) -> Vec<&crate::sessions::users::ReadBook> {
        let wanted = bigrams(&format!(
            "{answers} {}",
            self.preferences.keywords.join(" ")
        ));
        let mut scored: Vec<(usize, f64, usize)> = self
            .history
            .read_books
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let text = format!(
                    "{} {} {}",
                    b.title,
                    b.review.as_deref().unwrap_or(""),
                    b.genre.join(" ")
                );
                let overlap = bigrams(&text).intersection(&wanted).count();
                (overlap, b.rating.unwrap_or(0.0), i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        scored
            .into_iter()
            .take(SIMILAR_READ_BOOKS)
            .map(|(_, _, i)| &self.history.read_books[i])
            .collect()
    }
}

/// The character bigrams of `text`'s normalized words.
fn bigrams(text: &str) -> HashSet<(char, char)> {
    text.split_whitespace()
        .flat_map(|word| {
            let chars: Vec<char> = normalize(word).chars().collect();
            chars.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>()
        })
        .collect()
}

/// The five answers as one line of the prompt.
fn answers_line(req: &RecommendRequest) -> String {
    let [emotion, effect, occupation, context, focus] = req.answers();
    format!(
        "기분: {emotion}, 원하는 감정: {effect}, 직업: {occupation}, 독서 상황: {context}, 집중도: {focus}"
    )
}

/// The top genres by weight, highest first.
fn top_genres(preferences: &ReadingPreferences, n: usize) -> Vec<&str> {
    let mut genres: Vec<_> = preferences.genres.iter().collect();
    genres.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    genres
        .into_iter()
        .take(n)
        .map(|g| g.name.as_str())
        .collect()
}

impl Books {
    /// The recommender over the served `books` catalog, with readers from `users`.
    pub fn new(retriever: Arc<Retriever>, users: Arc<dyn UserStore>) -> Self {
        Self { retriever, users }
    }

    /// The user store behind the users routes.
    pub fn users(&self) -> &Arc<dyn UserStore> {
        &self.users
    }

    /// Method 1's enriched query.
    fn enriched_query(&self, req: &RecommendRequest, reader: &Reader) -> String {
        let mut query = req.answers().join(" ");
        let prefs = &reader.preferences;
        for word in prefs
            .keywords
            .iter()
            .map(String::as_str)
            .chain(top_genres(prefs, 3))
        {
            query.push(' ');
            query.push_str(word);
        }
        for book in reader.similar_read_books(&req.answers().join(" ")) {
            query.push(' ');
            query.push_str(&book.genre.join(" "));
            if let Some(review) = &book.review {
                query.push(' ');
                query.push_str(review);
            }
        }
        query
    }

    /// Method 1's candidates: hybrid search on the enriched query, read and avoided books
    /// removed, topped up in catalog order if retrieval finds too few. Blocking.
    fn rag_candidates(&self, query: &str, reader: &Reader) -> Vec<Item> {
        let catalog = self.retriever.catalog();
        let vector = self.retriever.embed_query(query).ok().flatten();
        let hits = self
            .retriever
            .search_embedded(query, vector.as_deref(), RETRIEVED, &[])
            .unwrap_or_default();
        let mut out: Vec<Item> = Vec::with_capacity(RAG_CANDIDATES);
        let ranked = hits.iter().filter_map(|h| catalog.get(h.index));
        for item in ranked.chain(catalog.items()) {
            if out.len() >= RAG_CANDIDATES {
                break;
            }
            if reader.may_get(item) && !out.iter().any(|o| o.title == item.title) {
                out.push(item.clone());
            }
        }
        out
    }

    /// Method 2's allowed books: every book the reader may get, one per title.
    fn all_allowed(&self, reader: &Reader) -> Vec<Item> {
        let mut seen = HashSet::new();
        self.retriever
            .catalog()
            .items()
            .iter()
            .filter(|item| reader.may_get(item) && seen.insert(item.title.as_str()))
            .cloned()
            .collect()
    }
}

/// Method 1's prompt: the candidates and a short summary of the reader.
fn rag_prompt(req: &RecommendRequest, reader: &Reader, candidates: &[Item]) -> String {
    let mut text = String::from("후보 도서:\n");
    for item in candidates {
        let _ = writeln!(text, "- {}", item.title);
    }
    let _ = write!(text, "\n독자: {}", answers_line(req));
    let prefs = &reader.preferences;
    let genres = top_genres(prefs, 3);
    if !genres.is_empty() || !prefs.keywords.is_empty() {
        let _ = write!(
            text,
            "\n선호: {}; 키워드: {}",
            genres.join(", "),
            prefs.keywords.join(", ")
        );
    }
    text
}

/// Method 2's prompt: the whole history and preferences, no candidates.
fn prompt_only_prompt(req: &RecommendRequest, reader: &Reader) -> String {
    let mut text = format!("독자: {}\n", answers_line(req));
    if !reader.history.read_books.is_empty() {
        text.push_str("읽은 책:\n");
        for b in &reader.history.read_books {
            let _ = write!(text, "- {}", b.title);
            if let Some(author) = &b.author {
                let _ = write!(text, " / {author}");
            }
            if let Some(rating) = b.rating {
                let _ = write!(text, " / 평점 {rating}");
            }
            if let Some(review) = &b.review {
                let _ = write!(text, " / {review}");
            }
            if !b.genre.is_empty() {
                let _ = write!(text, " / {}", b.genre.join(", "));
            }
            text.push('\n');
        }
    }
    let p = &reader.preferences;
    if !p.genres.is_empty() {
        let genres: Vec<String> = p
            .genres
            .iter()
            .map(|g| format!("{}({})", g.name, g.weight))
            .collect();
        let _ = writeln!(text, "선호 장르: {}", genres.join(", "));
    }
    let style = &p.reading_style;
    let style: Vec<String> = [
        ("길이", &style.preferred_length),
        ("난이도", &style.complexity_level),
        ("어조", &style.tone),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
    .collect();
    if !style.is_empty() {
        let _ = writeln!(text, "독서 스타일: {}", style.join(", "));
    }
    if !p.keywords.is_empty() {
        let _ = writeln!(text, "키워드: {}", p.keywords.join(", "));
    }
    if !p.avoid_topics.is_empty() {
        let _ = writeln!(text, "피할 주제: {}", p.avoid_topics.join(", "));
    }
    text.push_str("국립중앙도서관 사서 추천 도서 중 읽지 않은 책을 추천하세요.");
    text
}

/// Prepares an answer: the reader, the allowed books, the prompt and grammar, submitted.
pub async fn recommend(
    st: &AppState,
    books: &Arc<Books>,
    req: RecommendRequest,
) -> Result<Answering, BooksError> {
    let reader = match &req.user_id {
        None => Reader::default(),
        Some(id) => match books.users.profile(id).await {
            Ok(profile) => {
                let profile = profile.unwrap_or_default();
                Reader {
                    history: profile.history.unwrap_or_default(),
                    preferences: profile.preferences.unwrap_or_default(),
                }
            }
            Err(e) => {
                return Err(BooksError::Store {
                    detail: e.to_string(),
                })
            }
        },
    };
    let method = req.method;
    let (candidates, user_text) = {
        let books = books.clone();
        tokio::task::spawn_blocking(move || match method {
            Method::Rag => {
                let query = books.enriched_query(&req, &reader);
                let candidates = books.rag_candidates(&query, &reader);
                let prompt = rag_prompt(&req, &reader, &candidates);
                (candidates, prompt)
            }
            Method::PromptOnly => (
                books.all_allowed(&reader),
                prompt_only_prompt(&req, &reader),
            ),
        })
        .await
        .map_err(|e| BooksError::ModelFailed {
            detail: format!("retrieval: {e}"),
        })?
    };
    if candidates.len() < sprout_recommend::books::BOOKS {
        return Err(BooksError::NoCandidates);
    }
    let allowed: Vec<String> = candidates.iter().map(|c| c.title.clone()).collect();
    let authors: HashMap<String, String> = candidates
        .iter()
        .map(|c| {
            let author = c
                .tags
                .get("author")
                .and_then(|a| a.values().first().cloned())
                .unwrap_or_default();
            (c.title.clone(), author)
        })
        .collect();
    let isbns: HashMap<String, String> = candidates
        .iter()
        .filter_map(|c| Some((c.title.clone(), c.extra.get("isbn")?.as_str()?.to_string())))
        .collect();
    let lark = book_grammar(&allowed).map_err(|e| BooksError::ModelFailed {
        detail: e.to_string(),
    })?;
    let job = GenerationJob {
        prompt: PromptInput::Chat(vec![
            ChatMessage::new("system", SYSTEM),
            ChatMessage::new("user", user_text),
        ]),
        sampling: SamplingParams {
            repetition_penalty: REPETITION_PENALTY,
            ..SamplingParams::default()
        },
        max_tokens: Some(ANSWER_MAX_TOKENS),
        stop_strings: Vec::new(),
        ignore_eos: false,
        grammar: Some(GrammarSpec::Lark(lark)),
    };
    let handle = pipeline::submit(st, job).await.map_err(pipeline_error)?;
    Ok(Answering {
        handle,
        stream: BookStream::new(authors),
        allowed,
        isbns,
        method,
        usage: None,
    })
}

impl Answering {
    /// The next pieces as the answer is generated; None at the end (then [`Answering::finish`]).
    pub async fn next(&mut self) -> Option<Result<Vec<BookPiece>, BooksError>> {
        match self.handle.next().await? {
            Ok(Output::Text(text)) => Some(Ok(self.stream.push(&text))),
            Ok(Output::Done { usage, .. }) => {
                self.usage = Some(usage);
                None
            }
            Err(e) => Some(Err(pipeline_error(e))),
        }
    }

    /// The whole recommendation after the last piece, read back and checked.
    pub fn finish(self) -> Result<Recommendation, BooksError> {
        let usage = self.usage.ok_or_else(|| BooksError::ModelFailed {
            detail: "the answer ended without its usage".into(),
        })?;
        let books = self
            .stream
            .finish(&self.allowed)
            .map_err(|e| BooksError::ModelFailed {
                detail: e.to_string(),
            })?;
        tracing::info!(
            method = self.method.number(),
            candidates = self.allowed.len(),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cached_tokens = usage.cached_tokens,
            ms = self.handle.started.elapsed().as_millis() as u64,
            "books recommended"
        );
        let isbns = books
            .iter()
            .map(|b| self.isbns.get(&b.title).cloned())
            .collect();
        Ok(Recommendation {
            result: self.stream.shown().to_string(),
            books,
            isbns,
            method: self.method,
            usage,
            candidates: self.allowed.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::users::{GenreWeight, ReadBook};
    use sprout_recommend::{Catalog, CatalogFormat};

    fn catalog() -> Catalog {
        Catalog::parse(
            "books",
            r#"[{"title":"완벽이라는 중독 : 불안한 완벽주의자를 위한 심리학","author":"토머스 커런 지음"},
                {"title":"우울할 땐 뇌과학","author":"앨릭스 코브 지음"},
                {"title":"밤의 여행자들 : 긴장감 넘치는 스릴러","author":"윤고은 지음"},
                {"title":"마음의 기술","author":"가 지음","description":"공포를 다스리는 법"},
                {"title":"행복의 기원","author":"서은국 지음"},
                {"title":"[특별판] 괄호 제목","author":"나 지음"}]"#,
            CatalogFormat::Json,
        )
        .unwrap()
    }

    fn reader() -> Reader {
        Reader {
            history: ReadingHistory {
                read_books: vec![ReadBook {
                    title: "완벽이라는 중독".into(),
                    author: None,
                    rating: Some(4.5),
                    review: Some("심리학적 관점에서 자아를 이해".into()),
                    read_date: None,
                    genre: vec!["심리학".into()],
                }],
            },
            preferences: ReadingPreferences {
                genres: vec![
                    GenreWeight {
                        name: "에세이".into(),
                        weight: 0.6,
                    },
                    GenreWeight {
                        name: "심리학".into(),
                        weight: 0.8,
                    },
                ],
                keywords: vec!["불안".into()],
                avoid_topics: vec!["우울".into(), "공포".into(), "긴장감".into()],
                ..ReadingPreferences::default()
            },
        }
    }

    #[test]
    fn read_and_avoided_books_are_never_offered() {
        let catalog = catalog();
        let reader = reader();
        let offered: Vec<&str> = catalog
            .items()
            .iter()
            .filter(|i| reader.may_get(i))
            .map(|i| i.title.as_str())
            .collect();
        // Read (by its main title), 우울 in the title, 긴장감 in the subtitle, 공포 in the
        // description, and a title the grammar cannot hold: all out.
        assert_eq!(offered, ["행복의 기원"]);
        assert!(Reader::default().may_get(&catalog.items()[1]));
    }

    #[test]
    fn prompts_summarize_for_rag_and_paste_everything_for_prompt_only() {
        let req = RecommendRequest {
            user_emotion: "불안함".into(),
            desired_emotional_effect: "위로와 안정감".into(),
            occupation: "직장인".into(),
            reading_context: "잠들기 전 독서".into(),
            focus_level: "가볍게 읽을 수 있는 책".into(),
            user_id: None,
            method: Method::Rag,
        };
        let reader = reader();
        let catalog = catalog();
        let rag = rag_prompt(&req, &reader, &catalog.items()[4..5]);
        assert_eq!(
            rag,
            "후보 도서:\n- 행복의 기원\n\n독자: 기분: 불안함, 원하는 감정: 위로와 안정감, 직업: 직장인, 독서 상황: 잠들기 전 독서, 집중도: 가볍게 읽을 수 있는 책\n선호: 심리학, 에세이; 키워드: 불안"
        );
        let full = prompt_only_prompt(&req, &reader);
        assert!(full
            .contains("- 완벽이라는 중독 / 평점 4.5 / 심리학적 관점에서 자아를 이해 / 심리학\n"));
        assert!(full.contains("피할 주제: 우울, 공포, 긴장감\n"));
        assert!(!full.contains("후보"));
        let similar = reader.similar_read_books("불안 심리");
        assert_eq!(similar[0].title, "완벽이라는 중독");
    }

    #[test]
    fn bodies_carry_books_method_and_usage() {
        let rec = Recommendation {
            result: "1. **[a]** - b".into(),
            books: vec![AnsweredBook {
                title: "a".into(),
                author: "b".into(),
                reason: "r".into(),
                benefit: "f".into(),
            }],
            isbns: vec![None],
            method: Method::PromptOnly,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 2,
                forced_tokens: 1,
            },
            candidates: 1370,
        };
        assert_eq!(
            rec.body(),
            json!({"result":"1. **[a]** - b","books":[{"title":"a","author":"b","reason":"r","benefit":"f"}],"method":2,"candidates":1370})
        );
        assert_eq!(rec.done_data()["usage"]["cached_tokens"], 2);
        let with_isbn = Recommendation {
            isbns: vec![Some("9788936434120".into())],
            ..rec
        };
        assert_eq!(with_isbn.body()["books"][0]["isbn"], "9788936434120");
    }
}
