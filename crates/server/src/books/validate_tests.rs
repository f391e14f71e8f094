//! Tests for the books API's validation: every 422 shape FastAPI would give.

use serde_json::json;

use super::*;

fn detail(result: Result<impl std::fmt::Debug, BooksError>) -> Value {
    match result {
        Err(e @ BooksError::Invalid(_)) => e.detail(),
        other => panic!("expected a 422, got {other:?}"),
    }
}

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn full() -> Value {
    json!({
        "user_emotion": "불안함",
        "desired_emotional_effect": "위로와 안정감",
        "occupation": "직장인",
        "reading_context": "잠들기 전 독서",
        "focus_level": "가볍게 읽을 수 있는 책"
    })
}

#[test]
fn a_full_body_parses_with_defaults() {
    let req = RecommendRequest::from_json(&body(full())).unwrap();
    assert_eq!(req.answers()[0], "불안함");
    assert_eq!(req.answers()[4], "가볍게 읽을 수 있는 책");
    assert_eq!(req.method, Method::Rag);
    assert_eq!(req.user_id, None);
    let mut with = full();
    with["userId"] = json!("test-user");
    with["method"] = json!(2);
    with["extra"] = json!("ignored, as FastAPI does");
    let req = RecommendRequest::from_json(&body(with)).unwrap();
    assert_eq!(req.method, Method::PromptOnly);
    assert_eq!(req.user_id.unwrap().as_str(), "test-user");
}

#[test]
fn missing_and_mistyped_fields_are_listed_in_field_order() {
    let mut b = full();
    b.as_object_mut().unwrap().remove("occupation");
    b["focus_level"] = json!(3);
    let d = detail(RecommendRequest::from_json(&body(b.clone())));
    assert_eq!(
        d,
        json!([
            {"type":"missing","loc":["body","occupation"],"msg":"Field required","input":b},
            {"type":"string_type","loc":["body","focus_level"],"msg":"Input should be a valid string","input":3}
        ])
    );
    let d = detail(RecommendRequest::from_json(b"{}"));
    assert_eq!(d.as_array().unwrap().len(), 5);
    assert_eq!(d[4]["loc"], json!(["body", "focus_level"]));
}

#[test]
fn method_user_id_and_lengths_are_checked() {
    let mut b = full();
    b["method"] = json!(3);
    b["userId"] = json!("no spaces allowed");
    b["user_emotion"] = json!("가".repeat(MAX_ANSWER_CHARS + 1));
    let d = detail(RecommendRequest::from_json(&body(b)));
    let kinds: Vec<&str> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "string_too_long",
            "string_pattern_mismatch",
            "literal_error"
        ]
    );
    assert_eq!(d[2]["msg"], "Input should be 1 or 2");
    assert_eq!(d[1]["loc"], json!(["body", "userId"]));
    let mut b = full();
    b["method"] = json!("1");
    assert_eq!(
        detail(RecommendRequest::from_json(&body(b)))[0]["type"],
        "literal_error"
    );
}

#[test]
fn bodies_that_are_not_objects() {
    assert_eq!(
        detail(RecommendRequest::from_json(b"")),
        json!([{"type":"missing","loc":["body"],"msg":"Field required","input":null}])
    );
    let d = detail(RecommendRequest::from_json(b"[1]"));
    assert_eq!(d[0]["type"], "model_attributes_type");
    let d = detail(RecommendRequest::from_json(b"{\"user_emotion\": }"));
    assert_eq!(d[0]["type"], "json_invalid");
    assert_eq!(d[0]["loc"], json!(["body", 17]));
    assert_eq!(d[0]["msg"], "JSON decode error");
}

#[test]
fn question_index_parses_like_fastapi() {
    assert_eq!(question_index(None).unwrap(), 0);
    assert_eq!(question_index(Some("index=3")).unwrap(), 3);
    assert_eq!(question_index(Some("x=1&index=%2B4")).unwrap(), 4);
    assert_eq!(question_index(Some("index=-0")).unwrap(), 0);
    assert_eq!(
        question_index(Some("index=99999999999999999999999")).unwrap(),
        u64::MAX
    );
    assert_eq!(
        detail(question_index(Some("index=-1"))),
        json!([{"type":"greater_than_equal","loc":["query","index"],
                "msg":"Input should be greater than or equal to 0","input":"-1","ctx":{"ge":0}}])
    );
    for bad in ["index=abc", "index=", "index=1.5", "index=1e3"] {
        let d = detail(question_index(Some(bad)));
        assert_eq!(d[0]["type"], "int_parsing", "{bad}");
        assert_eq!(
            d[0]["msg"],
            "Input should be a valid integer, unable to parse string as an integer"
        );
    }
}

#[test]
fn the_test_case_files_are_valid_records() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/books/test-case");
    let (Ok(h), Ok(p)) = (
        std::fs::read(dir.join("user_reading_history.json")),
        std::fs::read(dir.join("user_reading_preferences.json")),
    ) else {
        eprintln!("skipping: {} is absent", dir.display());
        return;
    };
    let h = history(&h).unwrap();
    assert_eq!(h.read_books.len(), 15);
    assert_eq!(h.read_books[0].genre, ["심리학", "자기계발"]);
    let p = preferences(&p).unwrap();
    assert_eq!(p.avoid_topics, ["우울", "공포", "긴장감"]);
    assert_eq!(p.genres[0].name, "심리학");
    assert_eq!(p.reading_style.tone.as_deref(), Some("따뜻함"));
}

#[test]
fn bad_user_records_name_the_field() {
    let d = detail(history(&body(
        json!({"read_books":[{"title":"A"},{"author":"B"},{"title":"C","rating":9},{"title":"D","genre":"x"}]}),
    )));
    let locs: Vec<Value> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!(["body", "read_books", 1, "title"]),
            json!(["body", "read_books", 2, "rating"]),
            json!(["body", "read_books", 3, "genre"])
        ]
    );
    assert_eq!(
        detail(history(&body(json!({"read_books":"x"}))))[0]["type"],
        "list_type"
    );
    assert_eq!(detail(history(b"{}"))[0]["type"], "missing");
    let d = detail(preferences(&body(
        json!({"preferences":{"genres":[{"weight":0.5}],"avoid_topics":[1],"reading_style":"x"}}),
    )));
    let locs: Vec<Value> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!(["body", "preferences", "genres", 0, "name"]),
            json!(["body", "preferences", "reading_style"]),
            json!(["body", "preferences", "avoid_topics", 0])
        ]
    );
    assert_eq!(
        detail(preferences(&body(json!({"genres":[]}))))[0]["loc"],
        json!(["body", "preferences"])
    );
    assert_eq!(detail(user_id("a/b"))[0]["loc"], json!(["path", "user_id"]));
    assert!(user_id("test-user_1").is_ok());
}
