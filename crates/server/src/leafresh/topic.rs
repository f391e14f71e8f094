//! The keyword rules of the original free-text chatbot, as pure functions: is a message on
//! topic (or abusive), which category does it name, and how does the session's category move.
//!
//! Matching is on the message lowercased (so "DIY", "diy" and "FUCK" all hit); environmental
//! and category keywords are also matched with whitespace removed, so "제로 웨이스트" and
//! "에너지 절약" hit their keywords. Bad words are matched without removing whitespace:
//! "도시 발전" must not read as "시발". A semantic check layered on top gets the verdict with
//! the keyword that decided it, and should never let an [`KeywordVerdict::Abusive`] message
//! through.

use super::constants::{
    Category, ANOTHER_KEYWORDS, BAD_WORDS, CATEGORY_REQUEST_KEYWORDS, ENV_KEYWORDS,
    RESTORE_KEYWORDS,
};

/// A message prepared once for keyword matching.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// Lowercased.
    pub lower: String,
    /// Lowercased, whitespace removed.
    pub compact: String,
}

impl Normalized {
    /// Prepares `message`.
    pub fn new(message: &str) -> Self {
        let lower = message.to_lowercase();
        let compact = lower.chars().filter(|c| !c.is_whitespace()).collect();
        Normalized { lower, compact }
    }

    fn has_compact(&self, keyword: &str) -> Option<usize> {
        self.compact.find(&compact_keyword(keyword))
    }

    fn first_hit(&self, keywords: &'static [&'static str]) -> Option<&'static str> {
        keywords
            .iter()
            .copied()
            .find(|k| self.has_compact(k).is_some())
    }
}

fn compact_keyword(keyword: &str) -> String {
    keyword
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Why a message counts as on topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicHit {
    /// An ENV_KEYWORDS word (the original's only test).
    Environment(&'static str),
    /// A category named by its key, code or keyword (sprout's addition: "고기 줄이기" names 비건).
    Category(CategoryMention),
    /// A request about categories ("원래", "카테고리"…), which the original let through.
    CategoryRequest(&'static str),
}

/// The keyword check's verdict on a free-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeywordVerdict {
    /// A BAD_WORDS word: answered with the off-topic message, whatever else it says.
    Abusive { word: &'static str },
    /// On topic, and why.
    OnTopic(TopicHit),
    /// No keyword hit: off topic by the keyword rules (a semantic check may still rescue it).
    OffTopic,
}

impl KeywordVerdict {
    /// Whether the keyword rules alone answer with the off-topic message.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, KeywordVerdict::OnTopic(_))
    }
}

/// The keyword verdict on `message`. Abusive words win over everything (the original let a
/// category request through even with bad words; the contract says abusive → off topic).
pub fn keyword_verdict(message: &str) -> KeywordVerdict {
    let text = Normalized::new(message);
    if let Some(word) = BAD_WORDS
        .iter()
        .copied()
        .find(|w| text.lower.contains(&w.to_lowercase()))
    {
        return KeywordVerdict::Abusive { word };
    }
    if let Some(k) = text.first_hit(ENV_KEYWORDS) {
        return KeywordVerdict::OnTopic(TopicHit::Environment(k));
    }
    if let Some(m) = first_mention(&text) {
        return KeywordVerdict::OnTopic(TopicHit::Category(m));
    }
    if let Some(k) = text.first_hit(CATEGORY_REQUEST_KEYWORDS) {
        return KeywordVerdict::OnTopic(TopicHit::CategoryRequest(k));
    }
    KeywordVerdict::OffTopic
}

/// A category named in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryMention {
    pub category: Category,
    /// The key, code, alias or keyword that matched, as written in the constants.
    pub keyword: &'static str,
    /// Byte offset of the match in the lowercased, whitespace-free message.
    pub position: usize,
}

/// Every category the message names, each once at its earliest match, earliest first; ties
/// go to the longer keyword, then to the category order.
pub fn category_mentions(message: &str) -> Vec<CategoryMention> {
    mentions(&Normalized::new(message))
}

/// The category the message names first (the original picked the earliest keyword in the
/// sentence), if any.
pub fn detect_category(message: &str) -> Option<CategoryMention> {
    first_mention(&Normalized::new(message))
}

fn first_mention(text: &Normalized) -> Option<CategoryMention> {
    mentions(text).into_iter().next()
}

fn mentions(text: &Normalized) -> Vec<CategoryMention> {
    let mut found: Vec<CategoryMention> = Category::ALL
        .into_iter()
        .filter_map(|category| {
            let names = [category.label(), category.code()];
            names
                .into_iter()
                .chain(category.aliases().iter().copied())
                .chain(category.keywords().iter().copied())
                .filter_map(|keyword| {
                    text.has_compact(keyword).map(|position| CategoryMention {
                        category,
                        keyword,
                        position,
                    })
                })
                .min_by_key(|m| (m.position, std::cmp::Reverse(m.keyword.len())))
        })
        .collect();
    found.sort_by_key(|m| (m.position, std::cmp::Reverse(m.keyword.len()), m.category));
    found
}

/// What a message asks of the session's category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CategoryIntent {
    /// "원래", "처음", "이전", "기존"…: back to the base-info category.
    Restore { keyword: &'static str },
    /// "아무거나", "다른거", "새로운거"…: some other category.
    Another { keyword: &'static str },
    /// A category named by key, code or keyword.
    Named(CategoryMention),
    /// Nothing: keep the current category.
    Keep,
}

/// The intent of `message`, in the original's priority: restore, then another, then a named
/// category ("제로웨이스트 말고 다른거" asks for another, not for 제로웨이스트).
pub fn category_intent(message: &str) -> CategoryIntent {
    let text = Normalized::new(message);
    if let Some(keyword) = text.first_hit(RESTORE_KEYWORDS) {
        return CategoryIntent::Restore { keyword };
    }
    if let Some(keyword) = text.first_hit(ANOTHER_KEYWORDS) {
        return CategoryIntent::Another { keyword };
    }
    match first_mention(&text) {
        Some(m) => CategoryIntent::Named(m),
        None => CategoryIntent::Keep,
    }
}

/// The session's category after `message`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryChange {
    pub category: Category,
    pub intent: CategoryIntent,
}

/// Applies the session rules: restore goes to `base`; another takes the next category after
/// `current` in the fixed order that is neither `current` nor named in the message
/// (deterministic, unlike the original's random choice, so a turn can be replayed and tested);
/// a named category switches to it; otherwise `current` stays.
pub fn next_category(message: &str, current: Category, base: Category) -> CategoryChange {
    let intent = category_intent(message);
    let category = match &intent {
        CategoryIntent::Restore { .. } => base,
        CategoryIntent::Another { .. } => {
            let named: Vec<Category> = category_mentions(message)
                .into_iter()
                .map(|m| m.category)
                .collect();
            another(current, &named)
        }
        CategoryIntent::Named(m) => m.category,
        CategoryIntent::Keep => current,
    };
    CategoryChange { category, intent }
}

/// The first category after `current` (cyclically) that is not `current` and not excluded;
/// when every other one is excluded, simply the next after `current`.
pub fn another(current: Category, excluded: &[Category]) -> Category {
    let all = Category::ALL;
    let at = all.iter().position(|c| *c == current).unwrap_or(0);
    let after = (1..all.len()).map(|step| all[(at + step) % all.len()]);
    after
        .clone()
        .find(|c| !excluded.contains(c))
        .or_else(|| after.clone().next())
        .unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &'static str) -> KeywordVerdict {
        KeywordVerdict::OnTopic(TopicHit::Environment(k))
    }

    #[test]
    fn environment_keywords_are_on_topic() {
        assert_eq!(
            keyword_verdict("환경을 위해 분리수거를 잘하고 싶어요"),
            env("환경")
        );
        assert_eq!(keyword_verdict("텀블러 쓰는 법"), env("텀블러"));
        assert_eq!(keyword_verdict("diy 해보고 싶어"), env("DIY"));
        assert_eq!(keyword_verdict("제로 웨이스트 실천"), env("제로웨이스트"));
        // Every listed word is caught, alone.
        for k in ENV_KEYWORDS {
            assert!(!keyword_verdict(k).is_fallback(), "{k}");
        }
    }

    #[test]
    fn bad_words_are_abusive_even_on_topic() {
        assert_eq!(
            keyword_verdict("시발 환경 챌린지 추천해"),
            KeywordVerdict::Abusive { word: "시발" }
        );
        assert_eq!(
            keyword_verdict("FUCK the planet"),
            KeywordVerdict::Abusive { word: "fuck" }
        );
        assert_eq!(
            keyword_verdict("원래 카테고리로 ㅅㅂ"),
            KeywordVerdict::Abusive { word: "ㅅㅂ" }
        );
        for w in BAD_WORDS {
            let v = keyword_verdict(&format!("환경 {w} 챌린지"));
            assert!(matches!(v, KeywordVerdict::Abusive { .. }), "{w}");
            assert!(v.is_fallback());
        }
        // Whitespace is not removed for bad words: "도시 발전" is not "시발".
        assert_eq!(keyword_verdict("도시 발전과 환경"), env("환경"));
    }

    #[test]
    fn off_topic_and_other_on_topic_reasons() {
        assert_eq!(
            keyword_verdict("오늘 날씨 좋네요"),
            KeywordVerdict::OffTopic
        );
        assert!(keyword_verdict("주식 시세 알려줘").is_fallback());
        // A category keyword that is not an environmental one.
        let v = keyword_verdict("고기 줄이는 식단");
        assert!(matches!(
            v,
            KeywordVerdict::OnTopic(TopicHit::Category(CategoryMention {
                category: Category::Vegan,
                keyword: "고기",
                ..
            }))
        ));
        assert_eq!(
            keyword_verdict("카테고리 바꿔줘"),
            KeywordVerdict::OnTopic(TopicHit::CategoryRequest("카테고리"))
        );
    }

    #[test]
    fn category_detection_takes_the_earliest_mention() {
        let m = detect_category("자전거 타고 플라스틱 줍기").unwrap();
        assert_eq!(
            (m.category, m.keyword),
            (Category::CarbonFootprint, "자전거")
        );
        let m = detect_category("플라스틱 대신 자전거").unwrap();
        assert_eq!(m.category, Category::ZeroWaste);
        // 재활용 is in two lists: the tie goes to the first category, as in the original.
        assert_eq!(
            detect_category("재활용 팁").unwrap().category,
            Category::ZeroWaste
        );
        // Keys with their space, codes, aliases; the longer keyword at the same place wins.
        assert_eq!(
            detect_category("에너지 절약 방법").unwrap().keyword,
            "에너지 절약"
        );
        assert_eq!(
            detect_category("디지털 탄소 줄이기").unwrap().category,
            Category::DigitalCarbon
        );
        assert_eq!(
            detect_category("vegan 챌린지").unwrap().category,
            Category::Vegan
        );
        assert_eq!(
            detect_category("UPCYCLE 해보자").unwrap().category,
            Category::Upcycling
        );
        assert_eq!(detect_category("오늘 기분이 좋아"), None);
        let all: Vec<Category> = category_mentions("비건 식단과 플로깅 그리고 비건")
            .into_iter()
            .map(|m| m.category)
            .collect();
        assert_eq!(all, [Category::Vegan, Category::Plogging]);
    }

    #[test]
    fn naming_a_category_switches() {
        let c = next_category(
            "비건 챌린지 추천해줘",
            Category::ZeroWaste,
            Category::ZeroWaste,
        );
        assert_eq!(c.category, Category::Vegan);
        assert!(matches!(c.intent, CategoryIntent::Named(_)));
        let c = next_category("PLOGGING 하고 싶어", Category::Vegan, Category::ZeroWaste);
        assert_eq!(c.category, Category::Plogging);
    }

    #[test]
    fn restore_keywords_go_back_to_the_base() {
        for k in ["원래", "처음", "이전", "기존", "원래대로"] {
            let c = next_category(
                &format!("{k} 카테고리로 돌아가줘"),
                Category::Vegan,
                Category::Media,
            );
            assert_eq!(c.category, Category::Media, "{k}");
            assert!(matches!(c.intent, CategoryIntent::Restore { .. }));
        }
        // Restore wins over a named category.
        let c = next_category("처음 비건으로", Category::Plogging, Category::ZeroWaste);
        assert_eq!(c.category, Category::ZeroWaste);
    }

    #[test]
    fn another_picks_a_different_category_deterministically() {
        for k in ["아무거나 추천해줘", "다른거 없어?", "새로운거 보여줘"] {
            for current in Category::ALL {
                let c = next_category(k, current, Category::ZeroWaste);
                assert_ne!(c.category, current, "{k} from {current:?}");
                assert!(matches!(c.intent, CategoryIntent::Another { .. }));
                assert_eq!(c, next_category(k, current, Category::ZeroWaste));
            }
        }
        assert_eq!(
            next_category("다른거", Category::ZeroWaste, Category::ZeroWaste).category,
            Category::Plogging
        );
        assert_eq!(
            next_category("다른거", Category::Vegan, Category::ZeroWaste).category,
            Category::ZeroWaste
        );
        // Categories the message names are skipped: "플로깅 말고 다른거" from 제로웨이스트.
        assert_eq!(
            next_category(
                "플로깅 말고 다른거",
                Category::ZeroWaste,
                Category::ZeroWaste
            )
            .category,
            Category::CarbonFootprint
        );
        // Everything excluded: still not the current one.
        assert_eq!(
            another(Category::Media, &Category::ALL),
            Category::DigitalCarbon
        );
    }

    #[test]
    fn nothing_keeps_the_current_category() {
        let c = next_category("좋은 하루 보내세요", Category::Media, Category::ZeroWaste);
        assert_eq!(
            c,
            CategoryChange {
                category: Category::Media,
                intent: CategoryIntent::Keep
            }
        );
    }
}
