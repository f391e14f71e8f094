//! The Leafresh envelope `{"status","message","data"}` for JSON-mode answers: success bodies,
//! the off-topic answer, and the one `IntoResponse` of [`LeafreshError`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::LeafreshError;
use super::recommendation::Recommendation;

/// Success message of base-info.
pub const BASE_INFO_MESSAGE: &str = "사용자 기본 정보 키워드 선택을 기반으로 챌린지를 추천합니다.";
/// Success message of free-text (also the off-topic answer's, in JSON mode).
pub const FREE_TEXT_MESSAGE: &str = "사용자 자유 메시지를 기반으로 챌린지를 추천합니다.";
/// What the bot says to a message that is not about the environment, or is abusive.
pub const OFF_TOPIC_RECOMMEND: &str = "저는 친환경 챌린지를 추천해드리는 Leafresh 챗봇이에요! 환경 관련 질문을 해주시면 더 잘 도와드릴 수 있어요.";

/// Every Leafresh JSON body, and the data line of every SSE event. Fields serialize in this
/// order.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, T: Serialize> {
    /// The HTTP status, or the logical status inside an SSE event.
    pub status: u16,
    pub message: &'a str,
    pub data: T,
}

impl<T: Serialize> Envelope<'_, T> {
    /// The JSON text: UTF-8 as is (no `\u` escapes), one line (newlines inside strings are
    /// escaped, as JSON requires).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .expect("invariant: envelopes hold only strings, numbers and string-keyed structs")
    }
}

/// Which endpoint answered: it picks the success message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    BaseInfo,
    FreeText,
}

impl Endpoint {
    /// The success message of this endpoint.
    pub fn success_message(self) -> &'static str {
        match self {
            Endpoint::BaseInfo => BASE_INFO_MESSAGE,
            Endpoint::FreeText => FREE_TEXT_MESSAGE,
        }
    }
}

/// `data` of the off-topic answer: `{"recommend": OFF_TOPIC_RECOMMEND, "challenges": null}`.
#[derive(Debug, Serialize)]
pub struct OffTopicData {
    pub recommend: &'static str,
    pub challenges: Option<()>,
}

/// The off-topic `data`.
pub const OFF_TOPIC_DATA: OffTopicData = OffTopicData {
    recommend: OFF_TOPIC_RECOMMEND,
    challenges: None,
};

/// The 200 body of a recommendation.
pub fn success_body(endpoint: Endpoint, recommendation: &Recommendation) -> String {
    Envelope {
        status: 200,
        message: endpoint.success_message(),
        data: recommendation,
    }
    .to_json()
}

/// The 200 body of the off-topic answer (JSON mode, free-text).
pub fn off_topic_body() -> String {
    Envelope {
        status: 200,
        message: FREE_TEXT_MESSAGE,
        data: OFF_TOPIC_DATA,
    }
    .to_json()
}

/// The body of an error.
pub fn error_body(error: &LeafreshError) -> String {
    Envelope {
        status: error.status().as_u16(),
        message: &error.to_string(),
        data: error.data(),
    }
    .to_json()
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The 200 response of a recommendation.
pub fn success_response(endpoint: Endpoint, recommendation: &Recommendation) -> Response {
    json_response(StatusCode::OK, success_body(endpoint, recommendation))
}

/// The 200 response of the off-topic answer.
pub fn off_topic_response() -> Response {
    json_response(StatusCode::OK, off_topic_body())
}

impl IntoResponse for LeafreshError {
    fn into_response(self) -> Response {
        let mut resp = json_response(self.status(), error_body(&self));
        if let Some(s) = self.retry_after_s() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leafresh::error::Field;
    use crate::leafresh::recommendation::sample;

    async fn parts(resp: Response) -> (u16, Option<String>, Option<String>, String) {
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_string())
        };
        let (ct, retry) = (header(header::CONTENT_TYPE), header(header::RETRY_AFTER));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, retry, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn error_responses_are_exact() {
        use LeafreshError as E;
        let json = Some("application/json".to_string());
        let cases: Vec<(E, u16, Option<&str>, &str)> = vec![
            (
                E::Missing(vec![Field::Location, Field::Category]),
                400,
                None,
                r#"{"status":400,"message":"['location', 'category']은 필수입니다.","data":null}"#,
            ),
            (
                E::Missing(vec![Field::Message]),
                400,
                None,
                r#"{"status":400,"message":"['message']은 필수입니다.","data":null}"#,
            ),
            (
                E::InvalidChoice(vec![Field::Category]),
                400,
                None,
                r#"{"status":400,"message":"유효하지 않은 선택 항목이 포함되어 있습니다.","data":{"invalidFields":["category"]}}"#,
            ),
            (
                E::MessageTooShort { chars: 3 },
                422,
                None,
                r#"{"status":422,"message":"message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.","data":null}"#,
            ),
            (
                E::Malformed {
                    field: None,
                    detail: "EOF".into(),
                },
                422,
                None,
                r#"{"status":422,"message":"필수 항목이 누락되었거나 형식이 잘못되었습니다.","data":null}"#,
            ),
            (
                E::ModelFailed {
                    detail: "dead end".into(),
                },
                502,
                None,
                r#"{"status":502,"message":"AI 서버로부터 추천 결과를 받아오는 데 실패했습니다.","data":null}"#,
            ),
            (
                E::Overloaded { retry_after_s: 2 },
                503,
                Some("2"),
                r#"{"status":503,"message":"현재 서버가 혼잡하여 요청을 처리할 수 없습니다. 잠시 후 다시 시도해주세요.","data":null}"#,
            ),
        ];
        for (e, status, retry, body) in cases {
            let got = parts(e.into_response()).await;
            assert_eq!(
                got,
                (
                    status,
                    json.clone(),
                    retry.map(str::to_string),
                    body.to_string()
                )
            );
        }
    }

    #[tokio::test]
    async fn success_and_off_topic_bodies() {
        let (status, _, _, body) = parts(success_response(Endpoint::BaseInfo, &sample())).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(
            v["message"],
            "사용자 기본 정보 키워드 선택을 기반으로 챌린지를 추천합니다."
        );
        assert_eq!(v["data"]["recommend"], sample().recommend);
        assert_eq!(
            v["data"]["challenges"][1],
            serde_json::json!({"title":"장바구니 챙기기","description":"비닐봉지 대신 장바구니를 사용합니다.","category":"ZERO_WASTE","label":"제로웨이스트"})
        );
        assert!(body.starts_with(r#"{"status":200,"message":"#));
        assert!(!body.contains("\\u"), "UTF-8, not escapes: {body}");

        let v: serde_json::Value =
            serde_json::from_str(&success_body(Endpoint::FreeText, &sample())).unwrap();
        assert_eq!(
            v["message"],
            "사용자 자유 메시지를 기반으로 챌린지를 추천합니다."
        );

        let (status, _, _, body) = parts(off_topic_response()).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"{"status":200,"message":"사용자 자유 메시지를 기반으로 챌린지를 추천합니다.","data":{"recommend":"저는 친환경 챌린지를 추천해드리는 Leafresh 챗봇이에요! 환경 관련 질문을 해주시면 더 잘 도와드릴 수 있어요.","challenges":null}}"#
        );
    }
}
