//! The seam between the Leafresh routes and whoever writes the recommendation: what one turn
//! produces ([`Recommendation`]) and, while streaming, the structured pieces it is made of
//! ([`Piece`]), as a stream of [`RecommendEvent`]s. The routes turn pieces into the contract's
//! text fragments ([`super::sse::TextRenderer`]) and the final value into the JSON body or the
//! `close` event; the recommender never writes wire formats.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::constants::Category;
use super::error::LeafreshError;

/// One recommended challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub title: String,
    /// One sentence.
    pub description: String,
    pub category: Category,
}

impl Challenge {
    /// The Korean label of its category (`label` in JSON mode).
    pub fn label(&self) -> &'static str {
        self.category.label()
    }
}

/// JSON mode's shape: `{"title","description","category":"ZERO_WASTE","label":"제로웨이스트"}`.
impl Serialize for Challenge {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Challenge", 4)?;
        st.serialize_field("title", &self.title)?;
        st.serialize_field("description", &self.description)?;
        st.serialize_field("category", self.category.code())?;
        st.serialize_field("label", self.label())?;
        st.end()
    }
}

/// The answer of one turn: a sentence and (normally three) challenges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// One sentence introducing the challenges.
    pub recommend: String,
    pub challenges: Vec<Challenge>,
}

impl Recommendation {
    /// The `close` event's shape, whose challenges carry no `label`:
    /// `{"recommend", "challenges":[{"title","description","category"}]}`.
    pub fn close_data(&self) -> CloseData<'_> {
        CloseData {
            recommend: &self.recommend,
            challenges: self
                .challenges
                .iter()
                .map(|c| CloseChallenge {
                    title: &c.title,
                    description: &c.description,
                    category: c.category,
                })
                .collect(),
        }
    }
}

/// [`Recommendation`] as the `close` event writes it.
#[derive(Debug, Serialize)]
pub struct CloseData<'a> {
    pub recommend: &'a str,
    pub challenges: Vec<CloseChallenge<'a>>,
}

/// One challenge of the `close` event.
#[derive(Debug, Serialize)]
pub struct CloseChallenge<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub category: Category,
}

/// A piece of the recommendation as it is generated, already plain text (decoded from
/// whatever the model emits; no JSON syntax or escapes). `index` is the challenge's position,
/// from 0; several pieces of the same part continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Part of the recommend sentence.
    Recommend(String),
    /// Part of challenge `index`'s title.
    Title { index: usize, text: String },
    /// Part of challenge `index`'s description.
    Description { index: usize, text: String },
}

/// What a streaming recommender sends the route: pieces, then exactly one of `Done` or
/// `Failed`, after which the stream ends. Dropping the receiver means the client left: the
/// recommender must stop generating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecommendEvent {
    Piece(Piece),
    Done(Recommendation),
    Failed(LeafreshError),
}

/// A three-challenge recommendation for tests.
#[cfg(test)]
pub(crate) fn sample() -> Recommendation {
    Recommendation {
        recommend: "플라스틱을 줄이는 챌린지를 추천합니다.".into(),
        challenges: vec![
            Challenge {
                title: "텀블러 사용하기".into(),
                description: "일회용 컵 대신 텀블러를 사용합니다.".into(),
                category: Category::ZeroWaste,
            },
            Challenge {
                title: "장바구니 챙기기".into(),
                description: "비닐봉지 대신 장바구니를 사용합니다.".into(),
                category: Category::ZeroWaste,
            },
            Challenge {
                title: "분리수거 제대로 하기".into(),
                description: "라벨을 떼고 헹궈서 배출합니다.".into(),
                category: Category::ZeroWaste,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_mode_has_labels_close_has_not() {
        let r = sample();
        assert_eq!(
            serde_json::to_string(&r.challenges[0]).unwrap(),
            r#"{"title":"텀블러 사용하기","description":"일회용 컵 대신 텀블러를 사용합니다.","category":"ZERO_WASTE","label":"제로웨이스트"}"#
        );
        assert_eq!(
            serde_json::to_string(&r.close_data()).unwrap(),
            r#"{"recommend":"플라스틱을 줄이는 챌린지를 추천합니다.","challenges":[{"title":"텀블러 사용하기","description":"일회용 컵 대신 텀블러를 사용합니다.","category":"ZERO_WASTE"},{"title":"장바구니 챙기기","description":"비닐봉지 대신 장바구니를 사용합니다.","category":"ZERO_WASTE"},{"title":"분리수거 제대로 하기","description":"라벨을 떼고 헹궈서 배출합니다.","category":"ZERO_WASTE"}]}"#
        );
    }
}
