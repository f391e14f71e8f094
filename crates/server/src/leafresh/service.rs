//! The Leafresh recommender: from a validated request to a grounded answer. Topic by the
//! original's keywords and a semantic check (nearest eco item), category by the session rules
//! and the neighbours' vote, candidates retrieved from the `eco` catalog (category, location
//! and work type as filters), then the model chooses one of a few written sentences and three
//! distinct candidates under a grammar — it never composes what must be right. Descriptions
//! come from the catalog. The session remembers the turn.

use std::sync::Arc;

use sprout_engine::chat_template::ChatMessage;
use sprout_engine::grammar::GrammarSpec;
use sprout_engine::sampler::SamplingParams;
use sprout_recommend::answer::{
    answer_grammar, answer_grammar_with_notes, parse_answer, AnswerPiece, AnswerStream,
};
use sprout_recommend::classify::{classify, Verdict, ECO_OFF_TOPIC_SIMILARITY};
use sprout_recommend::{Catalog, Item, Retriever, TagFilter};

use super::constants::Category;
use super::error::LeafreshError;
use super::recommendation::{Challenge, Piece, Recommendation};
use super::topic::{keyword_verdict, next_category, CategoryIntent, KeywordVerdict, TopicHit};
use super::validate::{BaseInfoRequest, FreeTextRequest, Lang};
use crate::config::DescriptionSource;
use crate::pipeline::{self, GenerationHandle, GenerationJob, Output, PipelineError, PromptInput};
use crate::sessions::{Role, Session, SessionId, SessionStore, Turn};
use crate::state::AppState;
use sprout_engine::scheduler::Usage;

/// Words of the original's ENV_KEYWORDS that ask for something rather than name the
/// environment: a hit on one of them alone leaves the topic to the semantic check.
const GENERIC_WORDS: &[&str] = &[
    "아무",
    "추천",
    "챌린지",
    "도움",
    "도와줘",
    "자세히",
    "상세히",
    "아무거나",
    "무엇",
    "뭐",
    "만들기",
    "창작",
    "변형",
    "DIY",
];

/// Candidates the model chooses among.
const CANDIDATES: usize = 6;
/// A semantic category vote counts when its winner has at least this share.
const VOTE_CONFIDENCE: f32 = 0.5;
/// Tokens an answer may take: the grammar bounds it far below this.
const ANSWER_MAX_TOKENS: usize = 256;
/// Tokens an answer with generated descriptions may take (three notes of up to 58 characters).
const ANSWER_WITH_NOTES_MAX_TOKENS: usize = 640;

/// The fixed head of every prompt, first so the prefix cache shares it across requests.
const SYSTEM: &str = "당신은 친환경 챌린지를 추천하는 Leafresh 챗봇입니다. 후보 목록에서 사용자에게 가장 알맞은 챌린지 세 개를 고르고, 알맞은 추천 문장을 고르세요.";

/// The recommender's resources, built once at startup.
pub struct Leafresh {
    catalog: Catalog,
    retriever: Arc<Retriever>,
    sessions: Arc<dyn SessionStore>,
}

/// A prepared answer: off-topic, or a generation under way with what it chooses among.
pub enum Prepared {
    OffTopic,
    Answer(Box<Answering>),
}

/// A generation under way.
pub struct Answering {
    pub handle: GenerationHandle,
    candidates: Vec<Item>,
    category: Category,
    session: Option<(SessionId, SessionUpdate)>,
    user_text: String,
    stream: AnswerStream,
    sentence: String,
    picks: Vec<String>,
    lang: Lang,
    usage: Option<Usage>,
    /// With generated descriptions: the answer's text so far (its notes come after the picks,
    /// so the challenges are sent once it is complete).
    generated: Option<String>,
    /// The generated descriptions, once the answer is complete.
    notes: Vec<String>,
}

/// What the session learns from this turn.
#[derive(Clone)]
struct SessionUpdate {
    category: Category,
    base: Option<(Category, String, String)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn pipeline_error(e: PipelineError) -> LeafreshError {
    match e {
        PipelineError::Overloaded { retry_after_s, .. } => {
            LeafreshError::Overloaded { retry_after_s }
        }
        PipelineError::NotReady => LeafreshError::NotReady { retry_after_s: 5 },
        other => {
            tracing::warn!(error = %other, "a Leafresh answer failed");
            LeafreshError::ModelFailed {
                detail: other.to_string(),
            }
        }
    }
}

impl Leafresh {
    /// The recommender over the served `eco` catalog; its dense index (when the server has an
    /// embedder) also serves the semantic topic and category check.
    pub fn new(retriever: Arc<Retriever>, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            catalog: retriever.catalog().clone(),
            retriever,
            sessions,
        }
    }

    /// The message's vector (once per request: the check and every search reuse it) and the
    /// neighbours' verdict on it. Blocking: runs the embedder.
    fn understand(&self, message: &str) -> (Option<Vec<f32>>, Option<Verdict>) {
        let vector = self.retriever.embed_query(message).ok().flatten();
        let verdict = match (&vector, self.retriever.dense()) {
            (Some(v), Some((index, _))) => Some(classify(index, &self.catalog, v, "category")),
            _ => None,
        };
        (vector, verdict)
    }

    /// Candidates of `category` for `query` (its vector from [`Leafresh::understand`]),
    /// location and work type preferred. Blocking: searches the indexes.
    fn candidates(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        category: Category,
        base: Option<(&str, &str)>,
    ) -> Vec<Item> {
        let cat = TagFilter::new("category", category.code());
        let mut filter_sets = Vec::new();
        if let Some((loc, work)) = base {
            filter_sets.push(vec![
                cat.clone(),
                TagFilter::new("locations", loc),
                TagFilter::new("work_types", work),
            ]);
            filter_sets.push(vec![cat.clone(), TagFilter::new("locations", loc)]);
        }
        filter_sets.push(vec![cat.clone()]);
        let mut out: Vec<Item> = Vec::new();
        for filters in &filter_sets {
            if let Ok(hits) = self
                .retriever
                .search_embedded(query, vector, CANDIDATES, filters)
            {
                for h in hits {
                    if let Some(item) = self.catalog.get(h.index) {
                        if out.len() < CANDIDATES && !out.iter().any(|o| o.id == item.id) {
                            out.push(item.clone());
                        }
                    }
                }
            }
            if out.len() >= CANDIDATES {
                break;
            }
        }
        // A query with no searchable words: the category's items in catalog order.
        for item in self.catalog.items() {
            if out.len() >= CANDIDATES {
                break;
            }
            if item.matches(std::slice::from_ref(&cat)) && !out.iter().any(|o| o.id == item.id) {
                out.push(item.clone());
            }
        }
        out
    }
}

/// An item's title and description in `lang` (the catalog's translation, else the original).
fn localized(item: &Item, lang: Lang) -> (String, String) {
    let (t, d) = item.localized(lang.code());
    (t.to_string(), d.unwrap_or("").to_string())
}

fn location_zh(l: super::constants::Location) -> &'static str {
    match l.value() {
        "city" => "城市",
        "beach" => "海边",
        "mountain" => "山区",
        _ => "农村",
    }
}

fn work_zh(w: super::constants::WorkType) -> &'static str {
    match w.value() {
        "office" => "办公室职员",
        "field" => "现场工作",
        "sales" => "销售",
        _ => "居家办公",
    }
}

/// A category's name in `lang`.
fn label_in(category: Category, lang: Lang) -> &'static str {
    let (en, zh) = match category {
        Category::ZeroWaste => ("zero-waste", "零浪费"),
        Category::Plogging => ("plogging", "捡跑"),
        Category::CarbonFootprint => ("carbon-footprint", "碳足迹"),
        Category::EnergySaving => ("energy-saving", "节能"),
        Category::Upcycling => ("upcycling", "升级再造"),
        Category::Media => ("culture-sharing", "文化分享"),
        Category::DigitalCarbon => ("digital-carbon", "数字减碳"),
        Category::Vegan => ("vegan", "纯素"),
    };
    match lang {
        Lang::Ko => category.label(),
        Lang::En => en,
        Lang::Zh => zh,
    }
}

/// The sentences the model chooses among: written for the request, always well-formed.
/// `base` is (location, work type) in `lang`'s words.
fn sentences(category: Category, base: Option<(&str, &str)>, lang: Lang) -> Vec<String> {
    let label = label_in(category, lang);
    match lang {
        Lang::Ko => {}
        Lang::En => {
            let mut s = vec![
                format!("Here are {label} challenges to help you get started."),
                format!("Here are easy {label} challenges for everyday life."),
                format!("Here are {label} challenges that fit your request."),
            ];
            if let Some((loc, work)) = base {
                s.insert(
                    0,
                    format!("Here are {label} challenges for {work} workers in a {loc} area."),
                );
            }
            return s;
        }
        Lang::Zh => {
            let mut s = vec![
                format!("为您推荐以下{label}挑战。"),
                format!("为您推荐日常生活中容易开始的{label}挑战。"),
                format!("为您推荐符合您需求的{label}挑战。"),
            ];
            if let Some((loc, work)) = base {
                s.insert(0, format!("为{loc}地区的{work}人士推荐以下{label}挑战。"));
            }
            return s;
        }
    }
    let mut s = vec![
        format!("{label} 실천에 도움이 되는 챌린지를 추천합니다."),
        format!("일상에서 쉽게 시작할 수 있는 {label} 챌린지를 추천합니다."),
        format!("말씀하신 내용에 알맞은 {label} 챌린지를 추천합니다."),
    ];
    if let Some((loc, work)) = base {
        s.insert(
            0,
            format!("{loc} 지역의 {work} 분께 알맞은 {label} 챌린지를 추천합니다."),
        );
    }
    s
}

fn session_id(raw: &Option<String>) -> Result<Option<SessionId>, LeafreshError> {
    match raw {
        None => Ok(None),
        Some(s) => SessionId::parse(s)
            .map(Some)
            .map_err(|_| LeafreshError::InvalidSessionId {
                max_bytes: crate::sessions::MAX_SESSION_ID_BYTES,
            }),
    }
}

async fn load_session(lf: &Leafresh, id: &Option<SessionId>) -> Option<Session> {
    let id = id.as_ref()?;
    lf.sessions.load(id).await.ok().flatten()
}

fn category_of(code: &Option<String>) -> Option<Category> {
    code.as_deref().and_then(Category::parse)
}

/// Prepares a free-text answer (or the off-topic fallback).
pub async fn free_text(
    st: &AppState,
    lf: &Arc<Leafresh>,
    req: FreeTextRequest,
) -> Result<Prepared, LeafreshError> {
    let id = session_id(&req.session_id)?;
    let session = load_session(lf, &id).await;
    let keywords = keyword_verdict(&req.message);
    if matches!(keywords, KeywordVerdict::Abusive { .. }) {
        return Ok(Prepared::OffTopic);
    }
    let (vector, semantic) = {
        let (lf, msg) = (lf.clone(), req.message.clone());
        tokio::task::spawn_blocking(move || lf.understand(&msg))
            .await
            .map_err(|e| LeafreshError::ModelFailed {
                detail: format!("the topic check: {e}"),
            })?
    };
    // An environment word or a category request is on topic (the original's rule); a
    // category keyword alone ("메뉴", "고기") only when the semantic check agrees or is absent.
    let semantic_on = semantic
        .as_ref()
        .map(|v| v.on_topic(ECO_OFF_TOPIC_SIMILARITY));
    let on_topic = match &keywords {
        // The original's list holds request words too ("추천", "뭐", "도움"…): on their own
        // they decide nothing when the semantic check can.
        KeywordVerdict::OnTopic(TopicHit::Environment(w)) if GENERIC_WORDS.contains(w) => {
            semantic_on.unwrap_or(true)
        }
        KeywordVerdict::OnTopic(TopicHit::Environment(_) | TopicHit::CategoryRequest(_)) => true,
        KeywordVerdict::OnTopic(TopicHit::Category(_)) => semantic_on.unwrap_or(true),
        _ => semantic_on.unwrap_or(false),
    };
    // A message about the session's category ("원래 카테고리로", "다른거") is on topic too.
    let asks_category = !matches!(
        super::topic::category_intent(&req.message),
        CategoryIntent::Keep
    );
    if !on_topic && !asks_category {
        return Ok(Prepared::OffTopic);
    }
    let current = session
        .as_ref()
        .and_then(|s| category_of(&s.category))
        .unwrap_or(Category::DEFAULT);
    let base = session
        .as_ref()
        .and_then(|s| category_of(&s.base_category))
        .unwrap_or(current);
    let change = next_category(&req.message, current, base);
    let category = match change.intent {
        CategoryIntent::Keep => semantic
            .as_ref()
            .filter(|v| v.confidence >= VOTE_CONFIDENCE)
            .and_then(|v| v.category.as_deref())
            .and_then(Category::parse)
            .unwrap_or(current),
        _ => change.category,
    };
    let base_info = session
        .as_ref()
        .and_then(|s| Some((s.location.clone()?, s.work_type.clone()?)));
    let candidates = {
        let (lf, msg) = (lf.clone(), req.message.clone());
        tokio::task::spawn_blocking(move || {
            let base = base_info.as_ref().map(|(l, w)| (l.as_str(), w.as_str()));
            lf.candidates(&msg, vector.as_deref(), category, base)
        })
        .await
        .map_err(|e| LeafreshError::ModelFailed {
            detail: format!("retrieval: {e}"),
        })?
    };
    let history = session.map(|s| s.history).unwrap_or_default();
    let update = SessionUpdate {
        category,
        base: None,
    };
    let plan = Plan {
        candidates,
        category,
        sentences: sentences(category, None, req.lang),
        history: &history,
        message: &req.message,
        session: id.map(|i| (i, update)),
        lang: req.lang,
    };
    start(st, plan).await
}

/// Prepares a base-info answer.
pub async fn base_info(
    st: &AppState,
    lf: &Arc<Leafresh>,
    req: BaseInfoRequest,
) -> Result<Prepared, LeafreshError> {
    let id = session_id(&req.session_id)?;
    let session = load_session(lf, &id).await;
    let (loc, work) = (
        req.location.label().to_string(),
        req.work_type.label().to_string(),
    );
    let category = req.category;
    let (loc_in, work_in) = match req.lang {
        Lang::Ko => (loc.clone(), work.clone()),
        Lang::En => (
            req.location.value().to_string(),
            req.work_type.value().to_string(),
        ),
        Lang::Zh => (
            location_zh(req.location).to_string(),
            work_zh(req.work_type).to_string(),
        ),
    };
    let query = format!("{loc} {work} {}", category.label());
    let candidates = {
        let (lf, loc, work) = (lf.clone(), loc.clone(), work.clone());
        tokio::task::spawn_blocking(move || {
            let vector = lf.retriever.embed_query(&query).ok().flatten();
            lf.candidates(&query, vector.as_deref(), category, Some((&loc, &work)))
        })
        .await
        .map_err(|e| LeafreshError::ModelFailed {
            detail: format!("retrieval: {e}"),
        })?
    };
    let history = session.map(|s| s.history).unwrap_or_default();
    let update = SessionUpdate {
        category,
        base: Some((category, loc.clone(), work.clone())),
    };
    let message = format!("위치: {loc}, 직업: {work}, 카테고리: {}", category.label());
    let plan = Plan {
        candidates,
        category,
        sentences: sentences(category, Some((&loc_in, &work_in)), req.lang),
        history: &history,
        message: &message,
        session: id.map(|i| (i, update)),
        lang: req.lang,
    };
    start(st, plan).await
}

/// What an answer is generated from.
struct Plan<'a> {
    candidates: Vec<Item>,
    category: Category,
    sentences: Vec<String>,
    history: &'a [Turn],
    message: &'a str,
    session: Option<(SessionId, SessionUpdate)>,
    lang: Lang,
}

async fn start(st: &AppState, plan: Plan<'_>) -> Result<Prepared, LeafreshError> {
    let Plan {
        candidates,
        category,
        sentences,
        history,
        message,
        session,
        lang,
    } = plan;
    let titles: Vec<String> = candidates.iter().map(|c| c.title.clone()).collect();
    let generate_notes = st.config.leafresh_descriptions == DescriptionSource::Generated;
    let lark = if generate_notes {
        answer_grammar_with_notes(&sentences, &titles)
    } else {
        answer_grammar(&sentences, &titles)
    }
    .map_err(|e| LeafreshError::ModelFailed {
        detail: e.to_string(),
    })?;
    // Titles only: the descriptions would triple the prompt the model reads per request.
    let listing: String = candidates
        .iter()
        .map(|c| format!("- {}\n", c.title))
        .collect();
    let mut messages = vec![ChatMessage::new("system", SYSTEM)];
    for t in history.iter().rev().take(4).rev() {
        let role = if t.role == Role::User {
            "user"
        } else {
            "assistant"
        };
        messages.push(ChatMessage::new(role, t.text.clone()));
    }
    let ask = if generate_notes {
        " (고른 챌린지마다 notes에 한 문장 설명을 쓰세요)"
    } else {
        ""
    };
    messages.push(ChatMessage::new(
        "user",
        format!("후보:\n{listing}\n요청: {message}{ask}"),
    ));
    let job = GenerationJob {
        prompt: PromptInput::Chat(messages),
        sampling: SamplingParams::default(),
        max_tokens: Some(if generate_notes {
            ANSWER_WITH_NOTES_MAX_TOKENS
        } else {
            ANSWER_MAX_TOKENS
        }),
        stop_strings: Vec::new(),
        ignore_eos: false,
        grammar: Some(GrammarSpec::Lark(lark)),
    };
    let handle = pipeline::submit(st, job).await.map_err(pipeline_error)?;
    Ok(Prepared::Answer(Box::new(Answering {
        handle,
        candidates,
        category,
        session,
        user_text: message.to_string(),
        stream: AnswerStream::new(),
        sentence: String::new(),
        picks: Vec::new(),
        lang,
        usage: None,
        generated: generate_notes.then(String::new),
        notes: Vec::new(),
    })))
}

impl Answering {
    /// The next pieces of the answer as it is generated; None at the end (then call
    /// [`Answering::finish`]).
    pub async fn next(&mut self) -> Option<Result<Vec<Piece>, LeafreshError>> {
        match self.handle.next().await? {
            Ok(Output::Text(t)) => {
                if let Some(text) = &mut self.generated {
                    text.push_str(&t);
                }
                let mut out = Vec::new();
                for p in self.stream.push(&t) {
                    match p {
                        AnswerPiece::Sentence(s) => {
                            self.sentence.push_str(&s);
                            out.push(Piece::Recommend(s));
                        }
                        AnswerPiece::SentenceDone => {}
                        AnswerPiece::Pick(_, title) if self.generated.is_some() => {
                            self.picks.push(title);
                        }
                        AnswerPiece::Pick(n, title) => {
                            let (shown, description) = self
                                .candidates
                                .iter()
                                .find(|c| c.title == title)
                                .map(|c| localized(c, self.lang))
                                .unwrap_or_default();
                            self.picks.push(title);
                            out.push(Piece::Title {
                                index: n,
                                text: shown,
                            });
                            out.push(Piece::Description {
                                index: n,
                                text: description,
                            });
                        }
                    }
                }
                Some(Ok(out))
            }
            Ok(Output::Done { usage, .. }) => {
                self.usage = Some(usage);
                let text = self.generated.take()?;
                // Generated descriptions: the whole answer is known now; send its challenges.
                let notes = self.notes(&text);
                let mut out = Vec::new();
                for (index, title) in self.picks.iter().enumerate() {
                    let shown = self
                        .candidates
                        .iter()
                        .find(|c| &c.title == title)
                        .map(|c| localized(c, self.lang).0)
                        .unwrap_or_default();
                    out.push(Piece::Title { index, text: shown });
                    out.push(Piece::Description {
                        index,
                        text: notes.get(index).cloned().unwrap_or_default(),
                    });
                }
                self.notes = notes;
                Some(Ok(out))
            }
            Err(e) => Some(Err(pipeline_error(e))),
        }
    }

    /// The generated descriptions in a complete answer's text (none if it has no notes).
    fn notes(&self, text: &str) -> Vec<String> {
        let titles: Vec<String> = self.candidates.iter().map(|c| c.title.clone()).collect();
        parse_answer(text, &titles)
            .map(|a| a.notes)
            .unwrap_or_default()
    }

    /// The answer's token counts, once the generation is done.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The whole recommendation after the last piece, checked, with the session updated.
    pub async fn finish(self, lf: &Leafresh) -> Result<Recommendation, LeafreshError> {
        let titles: Vec<String> = self.candidates.iter().map(|c| c.title.clone()).collect();
        let text = serde_json::json!({"recommend": self.sentence, "picks": self.picks}).to_string();
        let answer = parse_answer(&text, &titles).map_err(|e| LeafreshError::ModelFailed {
            detail: e.to_string(),
        })?;
        let challenges = answer
            .picks
            .iter()
            .filter_map(|t| self.candidates.iter().find(|c| &c.title == t))
            .enumerate()
            .map(|(i, c)| Challenge {
                title: localized(c, self.lang).0,
                description: match self.notes.get(i) {
                    Some(note) => note.clone(),
                    None => localized(c, self.lang).1,
                },
                category: c
                    .tags
                    .get("category")
                    .and_then(|v| v.values().first().and_then(|s| Category::parse(s)))
                    .unwrap_or(self.category),
            })
            .collect();
        let rec = Recommendation {
            recommend: answer.recommend,
            challenges,
        };
        if let Some((id, update)) = self.session {
            let now = now_ms();
            let user = Turn::new(Role::User, self.user_text.clone(), now);
            let titles = answer.picks.join(", ");
            let assistant = Turn::new(Role::Assistant, format!("{} {titles}", rec.recommend), now);
            let edit = Box::new(move |s: &mut Session| {
                s.history.push(user);
                s.history.push(assistant);
                s.category = Some(update.category.code().to_string());
                if let Some((cat, loc, work)) = update.base {
                    s.base_category = Some(cat.code().to_string());
                    s.location = Some(loc);
                    s.work_type = Some(work);
                }
            });
            if let Err(e) = lf.sessions.update(&id, edit).await {
                tracing::warn!(error = %e, "the session could not be stored");
            }
        }
        Ok(rec)
    }
}
