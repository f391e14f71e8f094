//! The Leafresh chatbot's fixed vocabularies: categories (Korean key ↔ code), locations and work
//! types (Korean ↔ front-end English), and the keyword lists the original server used to decide
//! topic and category.
//!
//! Transcribed from the original's `chatbot_constants.py` and `process_chat`
//! (100-hours-a-week/15-Leafresh-AI, develop 31dfc47) and its front end's option lists; written
//! out here so the contract has no file to load at run time.

use serde::{Serialize, Serializer};

/// One of the eight challenge categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    ZeroWaste,
    Plogging,
    CarbonFootprint,
    EnergySaving,
    Upcycling,
    Media,
    DigitalCarbon,
    Vegan,
}

impl Category {
    /// Every category, in the original's order (the order keyword ties and "another" follow).
    pub const ALL: [Category; 8] = [
        Category::ZeroWaste,
        Category::Plogging,
        Category::CarbonFootprint,
        Category::EnergySaving,
        Category::Upcycling,
        Category::Media,
        Category::DigitalCarbon,
        Category::Vegan,
    ];

    /// free-text without a prior base-info call starts here (the original's default).
    pub const DEFAULT: Category = Category::ZeroWaste;

    /// The code the API answers with (`ZERO_WASTE`, …, `UPCYCLING`).
    pub fn code(self) -> &'static str {
        match self {
            Category::ZeroWaste => "ZERO_WASTE",
            Category::Plogging => "PLOGGING",
            Category::CarbonFootprint => "CARBON_FOOTPRINT",
            Category::EnergySaving => "ENERGY_SAVING",
            Category::Upcycling => "UPCYCLING",
            Category::Media => "MEDIA",
            Category::DigitalCarbon => "DIGITAL_CARBON",
            Category::Vegan => "VEGAN",
        }
    }

    /// The Korean key, which is also the `label` of a JSON-mode challenge. Note the spaces.
    pub fn label(self) -> &'static str {
        match self {
            Category::ZeroWaste => "제로웨이스트",
            Category::Plogging => "플로깅",
            Category::CarbonFootprint => "탄소발자국",
            Category::EnergySaving => "에너지 절약",
            Category::Upcycling => "업사이클",
            Category::Media => "문화 공유",
            Category::DigitalCarbon => "디지털 탄소",
            Category::Vegan => "비건",
        }
    }

    /// Other spellings accepted on input: the front end's `UPCYCLE`, and the spaced Korean keys
    /// written without their space (the original's ENV_KEYWORDS spell them so).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Category::Upcycling => &["UPCYCLE"],
            Category::EnergySaving => &["에너지절약"],
            Category::Media => &["문화공유"],
            Category::DigitalCarbon => &["디지털탄소"],
            _ => &[],
        }
    }

    /// Words that, found in a free-text message, name this category (the original's
    /// `category_keywords`).
    pub fn keywords(self) -> &'static [&'static str] {
        match self {
            Category::ZeroWaste => &[
                "제로웨이스트",
                "일회용",
                "플라스틱",
                "텀블러",
                "분리수거",
                "재활용",
                "쓰레기",
                "포장재",
            ],
            Category::Plogging => &[
                "플로깅",
                "운동",
                "조깅",
                "러닝",
                "달리기",
                "걷기",
                "산책",
                "운동하면서",
                "뛰면서",
                "스포츠",
            ],
            Category::CarbonFootprint => &[
                "탄소발자국",
                "탄소",
                "탄소중립",
                "온실가스",
                "기후변화",
                "대중교통",
                "자전거",
                "도보",
            ],
            Category::EnergySaving => &[
                "에너지",
                "절약",
                "전기",
                "전력",
                "전등",
                "조명",
                "콘센트",
                "에어컨",
                "난방",
            ],
            Category::Upcycling => &[
                "업사이클",
                "재활용",
                "새활용",
                "DIY",
                "만들기",
                "창작",
                "재사용",
                "변형",
            ],
            Category::Media => &[
                "문화",
                "공유",
                "소셜",
                "SNS",
                "캠페인",
                "홍보",
                "공유하기",
                "알리기",
                "전파",
            ],
            Category::DigitalCarbon => &[
                "디지털",
                "온라인",
                "인터넷",
                "스마트폰",
                "컴퓨터",
                "전자기기",
                "클라우드",
                "데이터",
            ],
            Category::Vegan => &[
                "비건",
                "채식",
                "식물성",
                "동물",
                "고기",
                "유제품",
                "채소",
                "과일",
                "식단",
            ],
        }
    }

    /// The category a request value names: its Korean key, its code, or an alias. Exact match
    /// after trimming; anything else is not a category.
    pub fn parse(value: &str) -> Option<Category> {
        let value = value.trim();
        Category::ALL
            .into_iter()
            .find(|c| c.label() == value || c.code() == value || c.aliases().contains(&value))
    }
}

impl Serialize for Category {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// Where the user lives (base-info `location`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    City,
    Beach,
    Mountain,
    Rural,
}

impl Location {
    /// Every location, in the front end's order.
    pub const ALL: [Location; 4] = [
        Location::City,
        Location::Beach,
        Location::Mountain,
        Location::Rural,
    ];

    /// The Korean value, the one prompts use.
    pub fn label(self) -> &'static str {
        match self {
            Location::City => "도시",
            Location::Beach => "바닷가",
            Location::Mountain => "산",
            Location::Rural => "농촌",
        }
    }

    /// The front end's English value.
    pub fn value(self) -> &'static str {
        match self {
            Location::City => "city",
            Location::Beach => "beach",
            Location::Mountain => "mountain",
            Location::Rural => "rural",
        }
    }

    /// The location a request value names, Korean or English, exact after trimming.
    pub fn parse(value: &str) -> Option<Location> {
        let value = value.trim();
        Location::ALL
            .into_iter()
            .find(|l| l.label() == value || l.value() == value)
    }
}

/// What kind of work the user does (base-info `workType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkType {
    Office,
    Field,
    Sales,
    Remote,
}

impl WorkType {
    /// Every work type, in the front end's order.
    pub const ALL: [WorkType; 4] = [
        WorkType::Office,
        WorkType::Field,
        WorkType::Sales,
        WorkType::Remote,
    ];

    /// The Korean value, the one prompts use.
    pub fn label(self) -> &'static str {
        match self {
            WorkType::Office => "사무직",
            WorkType::Field => "현장직",
            WorkType::Sales => "영업직",
            WorkType::Remote => "재택근무",
        }
    }

    /// The front end's English value.
    pub fn value(self) -> &'static str {
        match self {
            WorkType::Office => "office",
            WorkType::Field => "field",
            WorkType::Sales => "sales",
            WorkType::Remote => "remote",
        }
    }

    /// The work type a request value names, Korean or English, exact after trimming.
    pub fn parse(value: &str) -> Option<WorkType> {
        let value = value.trim();
        WorkType::ALL
            .into_iter()
            .find(|w| w.label() == value || w.value() == value)
    }
}

/// A message containing one of these is about the environment (the original's ENV_KEYWORDS;
/// deliberately broad: "추천", "뭐" and "도움" count, so most requests to the bot pass).
pub const ENV_KEYWORDS: &[&str] = &[
    "환경",
    "지구",
    "에코",
    "제로웨이스트",
    "탄소",
    "분리수거",
    "플라스틱",
    "텀블러",
    "기후",
    "친환경",
    "일회용",
    "미세먼지",
    "재활용",
    "자원",
    "대중교통",
    "도보",
    "비건",
    "탄소중립",
    "그린",
    "에너지",
    "쓰레기",
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
    "업사이클",
    "플로깅",
    "에너지절약",
    "문화공유",
    "디지털탄소",
    "새활용",
    "DIY",
    "만들기",
    "창작",
    "재사용",
    "변형",
];

/// A message containing one of these is abusive and gets the off-topic answer (the original's
/// BAD_WORDS, matched case-insensitively).
pub const BAD_WORDS: &[&str] = &[
    "시발",
    "씨발",
    "fuck",
    "shit",
    "개새끼",
    "병신",
    "ㅅㅂ",
    "ㅄ",
    "ㅂㅅ",
    "fuckyou",
    "asshole",
    "tlqkf",
    "ㅈ",
];

/// Words asking to go back to the base-info category (the original's restore list).
pub const RESTORE_KEYWORDS: &[&str] = &["원래", "처음", "이전", "원래대로", "기존"];

/// Words asking for some other category (the original's random list).
pub const ANOTHER_KEYWORDS: &[&str] = &["아무", "아무거나", "다른거", "새로운거", "딴거", "다른"];

/// Words that make a message a request about categories, on topic even without an
/// environmental word (the original's `category_reset_keywords`).
pub const CATEGORY_REQUEST_KEYWORDS: &[&str] =
    &["원래", "처음", "이전", "원래대로", "기존", "카테고리"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_map_keys_codes_and_aliases() {
        let pairs = [
            ("제로웨이스트", "ZERO_WASTE"),
            ("플로깅", "PLOGGING"),
            ("탄소발자국", "CARBON_FOOTPRINT"),
            ("에너지 절약", "ENERGY_SAVING"),
            ("업사이클", "UPCYCLING"),
            ("문화 공유", "MEDIA"),
            ("디지털 탄소", "DIGITAL_CARBON"),
            ("비건", "VEGAN"),
        ];
        for (c, (label, code)) in Category::ALL.into_iter().zip(pairs) {
            assert_eq!((c.label(), c.code()), (label, code));
            assert_eq!(Category::parse(label), Some(c));
            assert_eq!(Category::parse(code), Some(c));
        }
        assert_eq!(Category::parse("UPCYCLE"), Some(Category::Upcycling));
        assert_eq!(
            Category::parse(" 에너지절약 "),
            Some(Category::EnergySaving)
        );
        assert_eq!(Category::parse("zero_waste"), None);
        assert_eq!(Category::parse("에너지"), None);
        assert_eq!(Category::parse(""), None);
        assert_eq!(
            serde_json::to_string(&Category::Upcycling).unwrap(),
            r#""UPCYCLING""#
        );
    }

    #[test]
    fn locations_and_work_types_accept_korean_and_english() {
        let locations = [
            ("도시", "city"),
            ("바닷가", "beach"),
            ("산", "mountain"),
            ("농촌", "rural"),
        ];
        for (l, (ko, en)) in Location::ALL.into_iter().zip(locations) {
            assert_eq!((l.label(), l.value()), (ko, en));
            assert_eq!(Location::parse(ko), Some(l));
            assert_eq!(Location::parse(en), Some(l));
        }
        let works = [
            ("사무직", "office"),
            ("현장직", "field"),
            ("영업직", "sales"),
            ("재택근무", "remote"),
        ];
        for (w, (ko, en)) in WorkType::ALL.into_iter().zip(works) {
            assert_eq!((w.label(), w.value()), (ko, en));
            assert_eq!(WorkType::parse(ko), Some(w));
            assert_eq!(WorkType::parse(en), Some(w));
        }
        assert_eq!(Location::parse("바다"), None);
        assert_eq!(Location::parse("City"), None);
        assert_eq!(WorkType::parse("학생"), None);
    }

    #[test]
    fn keyword_lists_have_the_originals_lengths() {
        // A typo dropping a word would silently weaken the topic check.
        assert_eq!(ENV_KEYWORDS.len(), 42);
        assert_eq!(BAD_WORDS.len(), 13);
        let per_category: Vec<usize> = Category::ALL.iter().map(|c| c.keywords().len()).collect();
        assert_eq!(per_category, [8, 10, 8, 9, 8, 9, 8, 9]);
    }
}
