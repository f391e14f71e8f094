//! Every failure of a Leafresh request: its HTTP (or in-stream) status, the contract's Korean
//! message and the envelope's `data`. Rendering lives in [`super::envelope`] (HTTP) and
//! [`super::sse`] (the `error` event); both read these three methods, nothing else.

use axum::http::StatusCode;
use serde::Serialize;

/// A request field, named as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    SessionId,
    Location,
    WorkType,
    Category,
    Message,
    /// sprout's extension: the answer's language.
    Lang,
}

impl Field {
    /// The field's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Field::SessionId => "sessionId",
            Field::Location => "location",
            Field::WorkType => "workType",
            Field::Category => "category",
            Field::Message => "message",
            Field::Lang => "lang",
        }
    }
}

/// The names written as Python writes a list of strings: `['location', 'category']`. The
/// original built its message with an f-string over a list, and clients match that text.
pub fn python_list(fields: &[Field]) -> String {
    let names: Vec<String> = fields.iter().map(|f| format!("'{}'", f.name())).collect();
    format!("[{}]", names.join(", "))
}

/// `data` of an invalid-choice error: `{"invalidFields":["category"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidFields {
    #[serde(rename = "invalidFields")]
    pub invalid_fields: Vec<&'static str>,
}

/// An error answered to a Leafresh client. `Display` is exactly the envelope's `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafreshError {
    /// Required fields absent, null or blank, in the order location, workType, category (or
    /// message).
    #[error("{}은 필수입니다.", python_list(.0))]
    Missing(Vec<Field>),
    /// Values outside the fixed lists.
    #[error("유효하지 않은 선택 항목이 포함되어 있습니다.")]
    InvalidChoice(Vec<Field>),
    /// A sessionId outside the accepted charset or length (a sprout limit; the contract is
    /// silent).
    #[error("sessionId는 영문, 숫자, '-', '_', '.', ':'로 이루어진 {max_bytes}자 이하의 문자열이어야 합니다.")]
    InvalidSessionId { max_bytes: usize },
    /// The trimmed message has fewer than the minimum characters.
    #[error("message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.")]
    MessageTooShort { chars: usize },
    /// The trimmed message is longer than sprout accepts (a sprout limit).
    #[error("message는 최대 {max_chars}자까지 입력할 수 있습니다.")]
    MessageTooLong { chars: usize, max_chars: usize },
    /// The body is not JSON, not an object, has a wrong type or an unknown field; `detail` is
    /// for logs (the contract fixes the message).
    #[error("필수 항목이 누락되었거나 형식이 잘못되었습니다.")]
    Malformed {
        field: Option<String>,
        detail: String,
    },
    /// A query value whose percent-encoding does not decode to UTF-8.
    #[error("{}의 퍼센트 인코딩이 잘못되었습니다.", .field.name())]
    BadPercentEncoding { field: Field },
    /// Generation failed or its output could not be used; `detail` is for logs.
    #[error("AI 서버로부터 추천 결과를 받아오는 데 실패했습니다.")]
    ModelFailed { detail: String },
    /// The admission queue is full.
    #[error("현재 서버가 혼잡하여 요청을 처리할 수 없습니다. 잠시 후 다시 시도해주세요.")]
    Overloaded { retry_after_s: u64 },
    /// The model is still loading.
    #[error("AI 모델을 준비하는 중입니다. 잠시 후 다시 시도해주세요.")]
    NotReady { retry_after_s: u64 },
    /// A bug or an unexpected state on our side; `detail` is for logs.
    #[error("서버 내부 오류로 추천에 실패했습니다.")]
    Internal { detail: String },
}

impl LeafreshError {
    /// The HTTP status, which the envelope's `status` repeats.
    pub fn status(&self) -> StatusCode {
        match self {
            LeafreshError::Missing(_)
            | LeafreshError::InvalidChoice(_)
            | LeafreshError::InvalidSessionId { .. }
            | LeafreshError::BadPercentEncoding { .. } => StatusCode::BAD_REQUEST,
            LeafreshError::MessageTooShort { .. }
            | LeafreshError::MessageTooLong { .. }
            | LeafreshError::Malformed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            LeafreshError::ModelFailed { .. } => StatusCode::BAD_GATEWAY,
            LeafreshError::Overloaded { .. } | LeafreshError::NotReady { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LeafreshError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope's `data`: the offending fields for invalid values, otherwise null.
    pub fn data(&self) -> Option<InvalidFields> {
        let fields: &[Field] = match self {
            LeafreshError::InvalidChoice(fields) => fields,
            LeafreshError::InvalidSessionId { .. } => &[Field::SessionId],
            _ => return None,
        };
        Some(InvalidFields {
            invalid_fields: fields.iter().map(|f| f.name()).collect(),
        })
    }

    /// Seconds a client should wait before retrying (the `Retry-After` header), if any.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            LeafreshError::Overloaded { retry_after_s }
            | LeafreshError::NotReady { retry_after_s } => Some(*retry_after_s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_the_contracts() {
        use LeafreshError as E;
        let cases: Vec<(E, u16, &str)> = vec![
            (
                E::Missing(vec![Field::Location, Field::Category]),
                400,
                "['location', 'category']은 필수입니다.",
            ),
            (
                E::Missing(vec![Field::Message]),
                400,
                "['message']은 필수입니다.",
            ),
            (
                E::InvalidChoice(vec![Field::Category]),
                400,
                "유효하지 않은 선택 항목이 포함되어 있습니다.",
            ),
            (
                E::MessageTooShort { chars: 2 },
                422,
                "message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.",
            ),
            (
                E::MessageTooLong {
                    chars: 1001,
                    max_chars: 1000,
                },
                422,
                "message는 최대 1000자까지 입력할 수 있습니다.",
            ),
            (
                E::Malformed {
                    field: None,
                    detail: "x".into(),
                },
                422,
                "필수 항목이 누락되었거나 형식이 잘못되었습니다.",
            ),
            (
                E::ModelFailed { detail: "x".into() },
                502,
                "AI 서버로부터 추천 결과를 받아오는 데 실패했습니다.",
            ),
            (
                E::Overloaded { retry_after_s: 1 },
                503,
                "현재 서버가 혼잡하여 요청을 처리할 수 없습니다. 잠시 후 다시 시도해주세요.",
            ),
            (
                E::BadPercentEncoding {
                    field: Field::Message,
                },
                400,
                "message의 퍼센트 인코딩이 잘못되었습니다.",
            ),
            (
                E::Internal { detail: "x".into() },
                500,
                "서버 내부 오류로 추천에 실패했습니다.",
            ),
        ];
        for (e, status, message) in cases {
            assert_eq!(
                (e.status().as_u16(), e.to_string().as_str()),
                (status, message)
            );
        }
    }

    #[test]
    fn python_list_repr() {
        assert_eq!(python_list(&[Field::WorkType]), "['workType']");
        assert_eq!(
            python_list(&[Field::Location, Field::WorkType, Field::Category]),
            "['location', 'workType', 'category']"
        );
        assert_eq!(python_list(&[]), "[]");
    }

    #[test]
    fn data_names_invalid_fields_only() {
        let e = LeafreshError::InvalidChoice(vec![Field::Location, Field::Category]);
        assert_eq!(
            serde_json::to_string(&e.data()).unwrap(),
            r#"{"invalidFields":["location","category"]}"#
        );
        assert_eq!(LeafreshError::Missing(vec![Field::Location]).data(), None);
        assert_eq!(
            LeafreshError::Overloaded { retry_after_s: 3 }.retry_after_s(),
            Some(3)
        );
    }
}
