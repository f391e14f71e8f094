//! SSE tests: the bytes axum writes, read back with a small SSE parser as a browser would, and
//! the text the renderer makes of a sample recommendation.

use super::*;
use crate::leafresh::constants::Category;
use crate::leafresh::error::Field;
use crate::leafresh::recommendation::{sample, Challenge};
use serde_json::{json, Value};

/// One parsed event: its name and its data lines joined with '\n' (the SSE rule).
#[derive(Debug, PartialEq)]
struct Parsed {
    event: String,
    data: String,
    data_lines: usize,
}

/// A minimal SSE parser: `field: value` lines, a blank line ends the event; comments
/// (`:`-lines) skipped. Refuses anything else so format drift fails the test.
fn parse_sse(text: &str) -> Vec<Parsed> {
    assert!(text.ends_with("\n\n"), "stream must end with a blank line");
    let mut out = Vec::new();
    for block in text.split_terminator("\n\n") {
        let mut event = String::new();
        let mut data: Vec<&str> = Vec::new();
        for line in block.split('\n') {
            assert!(!line.contains('\r'), "stray CR in {line:?}");
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(": ").expect("field: value");
            match field {
                "event" => event = value.to_string(),
                "data" => data.push(value),
                other => panic!("unexpected field {other}"),
            }
        }
        out.push(Parsed {
            event,
            data: data.join("\n"),
            data_lines: data.len(),
        });
    }
    out
}

async fn wire(events: Vec<LeafreshEvent>) -> (Vec<(String, String)>, String) {
    let resp = sse_response(futures_util::stream::iter(events));
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn events_on_the_wire() {
    let rec = sample();
    let events = vec![
        LeafreshEvent::challenge("플라스틱을 줄이는 챌린지를 추천합니다."),
        LeafreshEvent::challenge("\n\n1. 텀블러"),
        LeafreshEvent::close(&rec),
    ];
    let encoded: String = events.iter().map(LeafreshEvent::encode).collect();
    let (headers, body) = wire(events).await;
    // axum writes exactly what `encode` documents.
    assert_eq!(body, encoded);
    for (k, v) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
    ] {
        assert!(
            headers.contains(&(k.to_string(), v.to_string())),
            "{k}: {v} in {headers:?}"
        );
    }
    assert!(body.starts_with(
        "event: challenge\ndata: {\"status\":200,\"message\":\"토큰 생성\",\"data\":\"플라스틱을 줄이는 챌린지를 추천합니다.\"}\n\n"
    ));

    let parsed = parse_sse(&body);
    assert_eq!(
        parsed.iter().map(|p| p.event.as_str()).collect::<Vec<_>>(),
        ["challenge", "challenge", "close"]
    );
    assert!(parsed.iter().all(|p| p.data_lines == 1));
    // The newline fragment: escaped in the JSON text, a real newline once parsed.
    assert!(parsed[1].data.contains(r#""data":"\n\n1. 텀블러""#));
    let v: Value = serde_json::from_str(&parsed[1].data).unwrap();
    assert_eq!(
        v,
        json!({"status":200,"message":"토큰 생성","data":"\n\n1. 텀블러"})
    );
    let close: Value = serde_json::from_str(&parsed[2].data).unwrap();
    assert_eq!(close["status"], 200);
    assert_eq!(close["message"], "모든 챌린지 추천 완료");
    assert_eq!(close["data"]["recommend"], rec.recommend);
    assert_eq!(
        close["data"]["challenges"][0],
        json!({"title":"텀블러 사용하기","description":"일회용 컵 대신 텀블러를 사용합니다.","category":"ZERO_WASTE"})
    );
    assert_eq!(close["data"]["challenges"].as_array().unwrap().len(), 3);
    // UTF-8, not \u escapes.
    assert!(!body.contains("\\u"));
}

#[test]
fn error_and_off_topic_events() {
    let e = LeafreshError::MessageTooShort { chars: 2 };
    assert_eq!(
        LeafreshEvent::error(&e).encode(),
        "event: error\ndata: {\"status\":422,\"message\":\"message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.\",\"data\":null}\n\n"
    );
    let e = LeafreshError::Missing(vec![Field::Message]);
    assert_eq!(
        LeafreshEvent::error(&e).data,
        r#"{"status":400,"message":"['message']은 필수입니다.","data":null}"#
    );
    assert_eq!(
        LeafreshEvent::off_topic().encode(),
        "event: error\ndata: {\"status\":200,\"message\":\"저는 친환경 챌린지를 추천해드리는 Leafresh 챗봇이에요! 환경 관련 질문을 해주시면 더 잘 도와드릴 수 있어요.\",\"data\":null}\n\n"
    );
    // Quotes, backslashes and control characters in a fragment stay inside one JSON string.
    let ev = LeafreshEvent::challenge("say \"hi\" \\ \r\n\t");
    assert_eq!(parse_sse(&ev.encode())[0].data_lines, 1);
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(v["data"], "say \"hi\" \\ \r\n\t");
}

const SAMPLE_TEXT: &str = "플라스틱을 줄이는 챌린지를 추천합니다.\n\n\
1. 텀블러 사용하기\n일회용 컵 대신 텀블러를 사용합니다.\n\n\
2. 장바구니 챙기기\n비닐봉지 대신 장바구니를 사용합니다.\n\n\
3. 분리수거 제대로 하기\n라벨을 떼고 헹궈서 배출합니다.";

#[test]
fn renderer_lays_out_a_recommendation() {
    assert_eq!(TextRenderer::render(&sample()), SAMPLE_TEXT);
}

#[test]
fn renderer_streams_token_pieces() {
    // The same answer arriving in small pieces, as a model generates it.
    let rec = sample();
    let mut pieces = Vec::new();
    let split = |s: &str| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        chars.chunks(3).map(|c| c.iter().collect()).collect()
    };
    for t in split(&rec.recommend) {
        pieces.push(Piece::Recommend(t));
    }
    for (index, c) in rec.challenges.iter().enumerate() {
        for text in split(&c.title) {
            pieces.push(Piece::Title { index, text });
        }
        for text in split(&c.description) {
            pieces.push(Piece::Description { index, text });
        }
    }
    pieces.push(Piece::Description {
        index: 2,
        text: String::new(),
    });
    let mut r = TextRenderer::new();
    let fragments: Vec<String> = pieces.iter().filter_map(|p| r.push(p)).collect();
    assert_eq!(
        fragments.len(),
        pieces.len() - 1,
        "empty piece sends nothing"
    );
    assert_eq!(fragments.concat(), SAMPLE_TEXT);
    assert!(fragments.iter().any(|f| f.starts_with("\n\n2. ")));
    for f in &fragments {
        assert!(!f.contains(['{', '}', '"', '\\']), "{f:?}");
    }

    // Through the event mapping: fragments become challenge events, Done the close event.
    let mut r = TextRenderer::new();
    let mut events: Vec<LeafreshEvent> = pieces
        .into_iter()
        .filter_map(|p| r.event(&RecommendEvent::Piece(p)))
        .collect();
    events.extend(r.event(&RecommendEvent::Done(rec.clone())));
    let text: String = events
        .iter()
        .filter(|e| e.kind == EventKind::Challenge)
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            v["data"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, SAMPLE_TEXT);
    assert_eq!(events.last().unwrap(), &LeafreshEvent::close(&rec));
    let failed = r.event(&RecommendEvent::Failed(LeafreshError::ModelFailed {
        detail: "x".into(),
    }));
    assert_eq!(failed.unwrap().kind, EventKind::Error);
}

#[test]
fn renderer_edge_cases() {
    // No sentence: the list starts at once; newlines inside a piece become spaces.
    let rec = Recommendation {
        recommend: String::new(),
        challenges: vec![Challenge {
            title: "제목\n둘째 줄".into(),
            description: "설명".into(),
            category: Category::Vegan,
        }],
    };
    assert_eq!(TextRenderer::render(&rec), "1. 제목 둘째 줄\n설명");
    // A description without its title still gets its number; going back continues in place.
    let mut r = TextRenderer::new();
    let out: String = [
        Piece::Recommend("문장.".into()),
        Piece::Description {
            index: 0,
            text: "설명".into(),
        },
        Piece::Recommend("뒤늦은".into()),
    ]
    .iter()
    .filter_map(|p| r.push(p))
    .collect();
    assert_eq!(out, "문장.\n\n1. \n설명뒤늦은");
}
