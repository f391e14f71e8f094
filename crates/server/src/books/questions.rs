//! The five questions the recommender asks, in order, exactly as the original's API returns them.

use serde_json::{json, Value};

/// One question and its example answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// The question.
    pub q: &'static str,
    /// `예시: …`.
    pub example: &'static str,
}

/// The questions, one per request field (see [`super::validate::ANSWER_FIELDS`]).
pub const QUESTIONS: [Question; 5] = [
    Question {
        q: "지금 당신의 기분을 가장 잘 설명하는 단어는 무엇인가요?",
        example: "예시: 행복함, 지침, 불안함, 우울함, 설렘, 혼란스러움 등",
    },
    Question {
        q: "지금 이 책을 통해 어떤 감정을 경험하고 싶으신가요?",
        example: "예시: 현실 도피, 공감, 위로, 영감/동기부여, 새로운 시각 등",
    },
    Question {
        q: "현재 어떤 직업을 가지고 계신가요?",
        example: "예시: 학생, 직장인, 프리랜서, 주부, 구직자 등",
    },
    Question {
        q: "지금 어떤 상황에서 독서를 하실 예정인가요?",
        example: "예시: 잠들기 전 휴식, 이동 중 짧은 시간, 주말 여유로운 시간, 스트레스 해소 등",
    },
    Question {
        q: "지금 어느 정도의 집중도가 필요한 책을 원하시나요?",
        example: "예시: 가볍게 읽을 수 있는 책, 깊은 사고가 필요한 책, 빠르게 몰입할 수 있는 책",
    },
];

/// The body of `GET /api/questions?index=`: the question at `index`, or `{"completed":true}`
/// past the last one.
pub fn question_body(index: u64) -> Value {
    match usize::try_from(index).ok().and_then(|i| QUESTIONS.get(i)) {
        Some(question) => json!({
            "completed": false,
            "question": {"q": question.q, "example": question.example},
        }),
        None => json!({"completed": true}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_questions_then_completed() {
        assert_eq!(
            question_body(0),
            json!({"completed": false, "question": {
                "q": "지금 당신의 기분을 가장 잘 설명하는 단어는 무엇인가요?",
                "example": "예시: 행복함, 지침, 불안함, 우울함, 설렘, 혼란스러움 등"}})
        );
        assert_eq!(
            question_body(4)["question"]["q"],
            "지금 어느 정도의 집중도가 필요한 책을 원하시나요?"
        );
        for index in [5, 6, u64::MAX] {
            assert_eq!(question_body(index), json!({"completed": true}));
        }
        assert!(QUESTIONS.iter().all(|q| q.example.starts_with("예시: ")));
    }
}
