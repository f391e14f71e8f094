//! Validation tests: every failure gets the contract's status and exact message, from JSON
//! bodies and from (double-encoded) query strings alike.

use super::*;

fn base(body: &str) -> Result<BaseInfoRequest, LeafreshError> {
    BaseInfoRequest::from_json(body.as_bytes())
}

fn free(body: &str) -> Result<FreeTextRequest, LeafreshError> {
    FreeTextRequest::from_json(body.as_bytes())
}

fn status_message(e: &LeafreshError) -> (u16, String) {
    (e.status().as_u16(), e.to_string())
}

#[test]
fn good_base_info_from_korean_and_english_values() {
    let want = BaseInfoRequest {
        session_id: Some("abc-123".into()),
        location: Location::City,
        work_type: WorkType::Office,
        category: Category::ZeroWaste,
        lang: Lang::Ko,
    };
    let got = base(
        r#"{"sessionId":"abc-123","location":"도시","workType":"사무직","category":"제로웨이스트"}"#,
    );
    assert_eq!(got.unwrap(), want);
    let got = base(
        r#"{"sessionId":"abc-123","location":"city","workType":"office","category":"ZERO_WASTE"}"#,
    );
    assert_eq!(got.unwrap(), want);
    let got = base(r#"{"location":"바닷가","workType":"remote","category":"UPCYCLE"}"#).unwrap();
    assert_eq!(
        (got.session_id, got.location, got.work_type, got.category),
        (None, Location::Beach, WorkType::Remote, Category::Upcycling)
    );
    let got =
        base(r#"{"location":"산","workType":"현장직","category":"에너지 절약","sessionId":" "}"#)
            .unwrap();
    assert_eq!(
        (got.session_id, got.category),
        (None, Category::EnergySaving)
    );
}

#[test]
fn every_combination_of_missing_fields_is_listed_in_order() {
    let names = ["location", "workType", "category"];
    let values = [r#""도시""#, r#""사무직""#, r#""비건""#];
    for mask in 1u8..8 {
        // Bit i set: field i is missing, written absent, null, empty or blank in turn.
        let absent_kinds = [None, Some("null"), Some(r#""""#), Some(r#"" \t ""#)];
        for kind in absent_kinds {
            let mut parts = Vec::new();
            let mut missing = Vec::new();
            for i in 0..3 {
                if mask & (1 << i) != 0 {
                    missing.push(format!("'{}'", names[i]));
                    if let Some(v) = kind {
                        parts.push(format!(r#""{}":{v}"#, names[i]));
                    }
                } else {
                    parts.push(format!(r#""{}":{}"#, names[i], values[i]));
                }
            }
            let body = format!("{{{}}}", parts.join(","));
            let e = base(&body).unwrap_err();
            let want = format!("[{}]은 필수입니다.", missing.join(", "));
            assert_eq!(status_message(&e), (400, want), "{body}");
            assert_eq!(e.data(), None);
        }
    }
    assert_eq!(
        base("{}").unwrap_err().to_string(),
        "['location', 'workType', 'category']은 필수입니다."
    );
    assert_eq!(
        base(r#"{"workType":"사무직"}"#).unwrap_err().to_string(),
        "['location', 'category']은 필수입니다."
    );
}

#[test]
fn missing_wins_over_invalid() {
    let e = base(r#"{"workType":"학생","category":"없음"}"#).unwrap_err();
    assert_eq!(e, LeafreshError::Missing(vec![Field::Location]));
}

#[test]
fn invalid_values_are_listed_in_invalid_fields() {
    let e = base(r#"{"location":"도시","workType":"사무직","category":"PIZZA"}"#).unwrap_err();
    assert_eq!(
        status_message(&e),
        (
            400,
            "유효하지 않은 선택 항목이 포함되어 있습니다.".to_string()
        )
    );
    assert_eq!(
        serde_json::to_string(&e.data()).unwrap(),
        r#"{"invalidFields":["category"]}"#
    );
    let e = base(r#"{"location":"화성","workType":"사무직","category":"zero_waste"}"#).unwrap_err();
    assert_eq!(
        e,
        LeafreshError::InvalidChoice(vec![Field::Location, Field::Category])
    );
    let e = base(r#"{"location":"x","workType":"y","category":"z"}"#).unwrap_err();
    assert_eq!(
        serde_json::to_string(&e.data()).unwrap(),
        r#"{"invalidFields":["location","workType","category"]}"#
    );
}

#[test]
fn malformed_bodies_are_422() {
    let bodies = [
        "",
        "not json",
        "[]",
        r#"["도시","사무직","비건"]"#,
        "\"도시\"",
        "null",
        r#"{"location":"도시""#,
        r#"{"location":1,"workType":"사무직","category":"비건"}"#,
        r#"{"location":"도시","workType":["사무직"],"category":"비건"}"#,
        r#"{"location":"도시","workType":"사무직","category":"비건","sessionId":7}"#,
        r#"{"location":"도시","workType":"사무직","category":"비건","extra":true}"#,
        r#"{"location":"도시","workType":"사무직","category":"비건"} trailing"#,
    ];
    for body in bodies {
        let e = base(body).unwrap_err();
        assert_eq!(
            status_message(&e),
            (
                422,
                "필수 항목이 누락되었거나 형식이 잘못되었습니다.".to_string()
            ),
            "{body}"
        );
    }
    // The offending field is kept for logs.
    let e = base(r#"{"location":1}"#).unwrap_err();
    assert!(matches!(e, LeafreshError::Malformed { field: Some(f), .. } if f == "location"));
    let e = free(r#"{"message":5}"#).unwrap_err();
    assert_eq!(e.status().as_u16(), 422);
}

#[test]
fn free_text_messages() {
    let ok = free(r#"{"sessionId":"u:1","message":"  플라스틱을 줄이고 싶어요  "}"#).unwrap();
    assert_eq!(
        ok,
        FreeTextRequest {
            session_id: Some("u:1".into()),
            message: "플라스틱을 줄이고 싶어요".into(),
            lang: Lang::Ko,
        }
    );
    // Older clients' location/workType are ignored, whatever their type.
    let ok = free(r#"{"message":"환경 챌린지","location":"도시","workType":3}"#).unwrap();
    assert_eq!(ok.message, "환경 챌린지");

    for body in [
        "{}",
        r#"{"message":null}"#,
        r#"{"message":""}"#,
        r#"{"message":"   \n "}"#,
        r#"{"message":"\u0000\u0007"}"#,
    ] {
        let e = free(body).unwrap_err();
        assert_eq!(
            status_message(&e),
            (400, "['message']은 필수입니다.".to_string()),
            "{body}"
        );
    }
    for body in [r#"{"message":"환경"}"#, r#"{"message":"  abcd  "}"#] {
        let e = free(body).unwrap_err();
        assert_eq!(
            status_message(&e),
            (
                422,
                "message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.".to_string()
            ),
            "{body}"
        );
    }
    // Five characters (not bytes) is enough; Korean syllables are 3 bytes each.
    assert_eq!(
        free(r#"{"message":"환경보호해"}"#).unwrap().message,
        "환경보호해"
    );
}

#[test]
fn message_length_limit() {
    let at_limit = "가".repeat(MAX_MESSAGE_CHARS);
    assert!(free(&format!(r#"{{"message":"{at_limit}"}}"#)).is_ok());
    for over in ["가".repeat(MAX_MESSAGE_CHARS + 1), "🌍".repeat(1 << 18)] {
        let e = free(&format!(r#"{{"message":"{over}"}}"#)).unwrap_err();
        assert_eq!(
            status_message(&e),
            (
                422,
                "message는 최대 1000자까지 입력할 수 있습니다.".to_string()
            )
        );
    }
}

#[test]
fn control_characters_are_cleaned() {
    let ok = free(r#"{"message":"a\r\nb\rc\u0000d\te\u001b"}"#).unwrap();
    assert_eq!(ok.message, "a\nb\ncd\te");
}

#[test]
fn session_ids() {
    for good in ["a", "550e8400-e29b-41d4-a716-446655440000", "user:42.x_y"] {
        let body = format!(r#"{{"sessionId":"{good}","message":"환경 챌린지 추천"}}"#);
        assert_eq!(free(&body).unwrap().session_id.as_deref(), Some(good));
    }
    let long = "a".repeat(MAX_SESSION_ID_BYTES + 1);
    for bad in ["a b", "세션", "a/b", "../x", long.as_str()] {
        let body = format!(r#"{{"sessionId":"{bad}","message":"환경 챌린지 추천"}}"#);
        let e = free(&body).unwrap_err();
        assert_eq!(e.status().as_u16(), 400, "{bad}");
        assert_eq!(
            serde_json::to_string(&e.data()).unwrap(),
            r#"{"invalidFields":["sessionId"]}"#
        );
    }
}

#[test]
fn queries_decode_once_or_twice() {
    // 바닷가 / 재택근무 / 업사이클, encoded once and encoded twice.
    let once = "sessionId=s&location=%EB%B0%94%EB%8B%B7%EA%B0%80&workType=%EC%9E%AC%ED%83%9D%EA%B7%BC%EB%AC%B4&category=%EC%97%85%EC%82%AC%EC%9D%B4%ED%81%B4";
    let twice = once.replace('%', "%25");
    let want = BaseInfoRequest {
        session_id: Some("s".into()),
        location: Location::Beach,
        work_type: WorkType::Remote,
        category: Category::Upcycling,
        lang: Lang::Ko,
    };
    assert_eq!(BaseInfoRequest::from_query(Some(once)).unwrap(), want);
    assert_eq!(BaseInfoRequest::from_query(Some(&twice)).unwrap(), want);
    // "에너지 절약" with its space, double-encoded.
    let q = "location=city&workType=sales&category=%25EC%2597%2590%25EB%2584%2588%25EC%25A7%2580%2520%25EC%25A0%2588%25EC%2595%25BD";
    assert_eq!(
        BaseInfoRequest::from_query(Some(q)).unwrap().category,
        Category::EnergySaving
    );

    let q = "message=%25EB%25B6%2584%25EB%25A6%25AC%25EC%2588%2598%25EA%25B1%25B0%2520%25ED%2595%25B4%25EC%259A%2594";
    assert_eq!(
        FreeTextRequest::from_query(Some(q)).unwrap().message,
        "분리수거 해요"
    );
    // A literal percent sign in a once-encoded message.
    let q = "message=%ED%94%8C%EB%9D%BC%EC%8A%A4%ED%8B%B1%20100%25%20%EC%A4%84%EC%9D%B4%EA%B8%B0";
    assert_eq!(
        FreeTextRequest::from_query(Some(q)).unwrap().message,
        "플라스틱 100% 줄이기"
    );
}

#[test]
fn query_errors_match_json_errors() {
    assert_eq!(
        BaseInfoRequest::from_query(None).unwrap_err().to_string(),
        "['location', 'workType', 'category']은 필수입니다."
    );
    assert_eq!(
        BaseInfoRequest::from_query(Some("location=&workType=office"))
            .unwrap_err()
            .to_string(),
        "['location', 'category']은 필수입니다."
    );
    assert_eq!(
        BaseInfoRequest::from_query(Some("location=mars&workType=office&category=VEGAN"))
            .unwrap_err(),
        LeafreshError::InvalidChoice(vec![Field::Location])
    );
    let e = FreeTextRequest::from_query(Some("sessionId=1")).unwrap_err();
    assert_eq!(
        status_message(&e),
        (400, "['message']은 필수입니다.".into())
    );
    let e = FreeTextRequest::from_query(Some("message=%ED%99%98")).unwrap_err();
    assert_eq!(e.status().as_u16(), 422);
    let e = FreeTextRequest::from_query(Some("message=%ZZ")).unwrap_err();
    assert_eq!(
        status_message(&e),
        (400, "message의 퍼센트 인코딩이 잘못되었습니다.".into())
    );
}

#[test]
fn lang_is_ko_en_or_zh() {
    let ok = free(r#"{"message":"plastic bags at the shop","lang":"EN"}"#).unwrap();
    assert_eq!(ok.lang, Lang::En);
    let ok = free(r#"{"message":"환경 챌린지 추천","lang":" "}"#).unwrap();
    assert_eq!(ok.lang, Lang::Ko);
    let e = free(r#"{"message":"환경 챌린지 추천","lang":"fr"}"#).unwrap_err();
    assert_eq!(e.status().as_u16(), 400);
    assert_eq!(
        e.to_string(),
        "유효하지 않은 선택 항목이 포함되어 있습니다."
    );
    let q =
        BaseInfoRequest::from_query(Some("location=도시&workType=사무직&category=비건&lang=zh"))
            .unwrap();
    assert_eq!(q.lang, Lang::Zh);
}
