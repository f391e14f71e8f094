//! Tests for catalog loading, checking, hashing and the item helpers.

use super::*;

fn jsonl(text: &str) -> Result<Catalog, CatalogError> {
    Catalog::parse("test", text, CatalogFormat::Jsonl)
}

#[test]
fn eco_loads() {
    let eco = Catalog::eco();
    assert_eq!(eco.name(), "eco");
    assert_eq!(eco.len(), 107);
    let first = &eco.items()[0];
    assert_eq!(first.id, "eco-zero-waste-01");
    assert_eq!(first.title, "텀블러에 커피 받아 가기");
    assert_eq!(first.lang.as_deref(), Some("ko"));
    assert_eq!(
        first.tags.get("category"),
        Some(&TagValue::One("ZERO_WASTE".into()))
    );
    assert!(first.tags["locations"].matches("바닷가"));
    assert_eq!(
        first.translations["zh"].title, "用随行杯装咖啡",
        "translations are read"
    );
    assert_eq!(eco.index_of("eco-vegan-13"), Some(106));
    assert_eq!(eco.content_hash().len(), 64);
    assert!(eco.items().iter().all(|item| item.extra.is_empty()));
}

#[test]
fn missing_or_empty_id_and_title_are_refused_with_their_line() {
    let text = "{\"id\":\"a\",\"title\":\"A\"}\n\n{\"id\":\"b\"}\n";
    match jsonl(text) {
        Err(CatalogError::MissingField { at, field }) => {
            assert_eq!(at, Location::Line(3));
            assert_eq!(field, "title");
        }
        other => panic!("expected a missing title, got {other:?}"),
    }
    let error = jsonl("{\"id\":\"  \",\"title\":\"A\"}").unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: item has no `id` (or it is empty)"
    );
}

#[test]
fn duplicate_ids_name_both_lines() {
    let text = "{\"id\":\"a\",\"title\":\"A\"}\n{\"id\":\"b\",\"title\":\"B\"}\n{\"id\":\"a\",\"title\":\"C\"}";
    let error = jsonl(text).unwrap_err();
    assert_eq!(error.to_string(), "duplicate id \"a\" at line 1 and line 3");
}

#[test]
fn malformed_json_names_the_line_and_serde_message() {
    let error = jsonl("{\"id\":\"a\",\"title\":\"A\"}\n{\"id\": \"b\", \"title\": }").unwrap_err();
    match &error {
        CatalogError::Json { at, message } => {
            assert_eq!(*at, Location::Line(2));
            assert!(message.contains("column"), "{message}");
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
    assert!(error.to_string().starts_with("line 2: invalid JSON: "));
    let error = jsonl("[1]").unwrap_err();
    assert_eq!(error.to_string(), "line 1: an item must be a JSON object");
}

#[test]
fn wrong_field_types_are_named() {
    let error = jsonl(r#"{"id":"a","title":"A","tags":{"category":3}}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: field `tags.category` must be a string or a list of strings"
    );
    let error = jsonl(r#"{"id":"a","title":"A","tags":{"l":["x",2]}}"#).unwrap_err();
    assert!(error.to_string().contains("`tags.l[1]`"), "{error}");
    let error =
        jsonl(r#"{"id":"a","title":"A","translations":{"en":{"description":"d"}}}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: item has no `translations.en.title` (or it is empty)"
    );
    let error =
        jsonl(r#"{"id":"a","title":"A","translations":{"en":{"title":"t","x":1}}}"#).unwrap_err();
    assert!(error.to_string().contains("`translations.en.x`"), "{error}");
    let error = jsonl(r#"{"id":"a","title":["A"]}"#).unwrap_err();
    assert_eq!(error.to_string(), "line 1: field `title` must be a string");
}

#[test]
fn json_array_and_items_object_load_and_errors_name_the_index() {
    let array = r#"[{"id":"a","title":"A"},{"id":7,"title":"B","price":3}]"#;
    let catalog = Catalog::parse("t", array, CatalogFormat::Json).unwrap();
    assert_eq!(catalog.items()[1].id, "7", "integer ids become strings");
    assert_eq!(catalog.items()[1].extra["price"], serde_json::json!(3));
    let object = r#"{"name":"x","items":[{"id":"a","title":"A"},{"id":7,"title":"B","price":3}]}"#;
    let same = Catalog::parse("t", object, CatalogFormat::Json).unwrap();
    assert_eq!(same.content_hash(), catalog.content_hash());

    let error = Catalog::parse(
        "t",
        r#"[{"id":"a","title":"A"},{"id":"b"}]"#,
        CatalogFormat::Json,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "items[1]: item has no `title` (or it is empty)"
    );
    let error = Catalog::parse(
        "t",
        r#"[{"id":"a","title":"A"},{"id":"a","title":"B"}]"#,
        CatalogFormat::Json,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "duplicate id \"a\" at items[0] and items[1]"
    );
    let error = Catalog::parse(
        "t",
        "[\n{\"id\":\"a\",\n\"title\" \"A\"}]",
        CatalogFormat::Json,
    )
    .unwrap_err();
    assert!(
        error.to_string().starts_with("line 3: invalid JSON"),
        "{error}"
    );
    let error = Catalog::parse("t", r#"{"rows":[]}"#, CatalogFormat::Json).unwrap_err();
    assert!(matches!(error, CatalogError::Shape));
}

const CSV: &str = "\
id,title,description,lang,tags.category,tags.locations,translations.en.title,translations.en.description,price
a,제목,설명,ko,ZERO_WASTE,도시|바닷가,Title,Desc,3
b,\"Two, quoted\",,en,VEGAN,산,,,
";

#[test]
fn csv_maps_columns_to_fields() {
    let catalog = Catalog::parse("t", CSV, CatalogFormat::Csv).unwrap();
    assert_eq!(catalog.len(), 2);
    let a = &catalog.items()[0];
    assert_eq!(a.description.as_deref(), Some("설명"));
    assert_eq!(a.tags["category"], TagValue::One("ZERO_WASTE".into()));
    assert_eq!(
        a.tags["locations"],
        TagValue::List(vec!["도시".into(), "바닷가".into()])
    );
    assert_eq!(a.translations["en"].title, "Title");
    assert_eq!(a.translations["en"].description.as_deref(), Some("Desc"));
    assert_eq!(a.extra["price"], serde_json::json!("3"));
    let b = &catalog.items()[1];
    assert_eq!(b.title, "Two, quoted");
    assert_eq!(b.description, None, "empty cells are absent");
    assert!(b.translations.is_empty());
    assert!(b.extra.is_empty());
}

#[test]
fn csv_errors_name_the_line_and_field() {
    let error = Catalog::parse("t", "id,title\na,A\nb,\n", CatalogFormat::Csv).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 3: item has no `title` (or it is empty)"
    );
    let error = Catalog::parse("t", "id,title\na,A\nb,B\na,C\n", CatalogFormat::Csv).unwrap_err();
    assert_eq!(error.to_string(), "duplicate id \"a\" at line 2 and line 4");
    let error = Catalog::parse("t", "id,title\na,A\nb,B,extra\n", CatalogFormat::Csv).unwrap_err();
    assert!(
        matches!(error, CatalogError::Csv { line: 3, .. }),
        "{error}"
    );
    let error = Catalog::parse("t", "id,name\na,A\n", CatalogFormat::Csv).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: CSV header has no `title` column"
    );
    let error = Catalog::parse("t", "id,title,tags.\n", CatalogFormat::Csv).unwrap_err();
    assert!(
        matches!(error, CatalogError::InvalidColumn { .. }),
        "{error}"
    );
    let error =
        Catalog::parse("t", "id,title,translations.en.name\n", CatalogFormat::Csv).unwrap_err();
    assert!(
        matches!(error, CatalogError::InvalidColumn { .. }),
        "{error}"
    );
    let error = Catalog::parse(
        "t",
        "id,title,translations.en.description\na,A,d\n",
        CatalogFormat::Csv,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 2: item has no `translations.en.title` (or it is empty)"
    );
}

#[test]
fn content_hash_ignores_key_order_and_formatting_but_not_content() {
    let one =
        jsonl(r#"{"id":"a","title":"A","tags":{"x":"1","y":["2"]},"z":{"b":1,"a":2}}"#).unwrap();
    let two = jsonl(
        r#"{ "z": {"a": 2, "b": 1}, "tags": {"y": ["2"], "x": "1"}, "title": "A", "id": "a" }"#,
    )
    .unwrap();
    assert_eq!(one.content_hash(), two.content_hash());
    let three =
        jsonl(r#"{"id":"a","title":"B","tags":{"x":"1","y":["2"]},"z":{"b":1,"a":2}}"#).unwrap();
    assert_ne!(one.content_hash(), three.content_hash());
    let empty = jsonl("").unwrap();
    assert!(empty.is_empty());
    assert_eq!(
        empty.content_hash(),
        "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
        "sha256 of \"[]\""
    );
}

#[test]
fn from_path_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("books.csv");
    std::fs::write(&csv_path, CSV).unwrap();
    let catalog = Catalog::from_path(&csv_path).unwrap();
    assert_eq!(catalog.name(), "books");
    assert_eq!(catalog.len(), 2);
    let json_path = dir.path().join("x.JSON");
    std::fs::write(&json_path, r#"[{"id":"a","title":"A"}]"#).unwrap();
    assert_eq!(Catalog::from_path(&json_path).unwrap().len(), 1);
    let other = dir.path().join("x.txt");
    std::fs::write(&other, "").unwrap();
    assert!(matches!(
        Catalog::from_path(&other),
        Err(CatalogError::UnknownExtension { .. })
    ));
    assert!(matches!(
        Catalog::from_path(&dir.path().join("absent.jsonl")),
        Err(CatalogError::Io { .. })
    ));
    assert_eq!(
        "NDJSON".parse::<CatalogFormat>().unwrap(),
        CatalogFormat::Jsonl
    );
    assert!("xml".parse::<CatalogFormat>().is_err());
}

#[test]
fn text_for_index_joins_everything_searchable() {
    let eco = Catalog::eco();
    let text = eco.items()[0].text_for_index();
    for part in [
        "텀블러에 커피",
        "일회용 컵",
        "ZERO_WASTE",
        "바닷가",
        "사무직",
        "tumbler",
        "随行杯",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
}

#[test]
fn localized_falls_back_to_the_original() {
    let eco = Catalog::eco();
    let item = &eco.items()[0];
    assert_eq!(item.localized("en").0, "Get your coffee in a tumbler");
    assert_eq!(item.localized("en-US").0, "Get your coffee in a tumbler");
    assert_eq!(item.localized("ZH").0, "用随行杯装咖啡");
    assert_eq!(
        item.localized("ko"),
        (item.title.as_str(), item.description.as_deref())
    );
    assert_eq!(item.localized("fr").0, item.title);
    let mut bare = Item::new("x", "제목");
    bare.description = Some("설명".into());
    bare.translations.insert(
        "en".into(),
        Translation {
            title: "Title".into(),
            description: None,
        },
    );
    assert_eq!(bare.localized("en"), ("Title", Some("설명")));
}

#[test]
fn tag_filters_parse_and_match_values_and_lists() {
    let eco = Catalog::eco();
    let item = &eco.items()[0];
    let category: TagFilter = "category=ZERO_WASTE".parse().unwrap();
    let beach: TagFilter = "locations = 바닷가".parse().unwrap();
    assert_eq!(beach, TagFilter::new("locations", "바닷가"));
    assert!(item.matches(&[category.clone(), beach]));
    assert!(item.matches(&[]));
    assert!(!item.matches(&[category, TagFilter::new("locations", "산")]));
    assert!(!item.matches(&[TagFilter::new("color", "green")]));
    assert!("=x".parse::<TagFilter>().is_err());
    assert!("category".parse::<TagFilter>().is_err());
}

#[test]
fn items_serialize_with_their_extra_fields() {
    let catalog = jsonl(r#"{"id":"a","title":"A","url":"http://x","tags":{"k":["v"]}}"#).unwrap();
    let json = serde_json::to_value(&catalog.items()[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id":"a","title":"A","url":"http://x","tags":{"k":["v"]}})
    );
}

#[test]
fn book_records_without_id_get_a_stable_id_and_searchable_author_and_subtitle() {
    let one = r#"[{"title":"침묵을 배우는 시간 : 말이 넘쳐나는 세상 속","author":"코르넬리아 토프 지음"},{"title":"지명발견록","author":"이경교 지음"}]"#;
    let swapped = r#"[{"title":"지명발견록","author":"이경교 지음"},{"author":"코르넬리아 토프 지음","title":"침묵을 배우는 시간 : 말이 넘쳐나는 세상 속"}]"#;
    let a = Catalog::parse("books", one, CatalogFormat::Json).unwrap();
    let b = Catalog::parse("books", swapped, CatalogFormat::Json).unwrap();
    let first = &a.items()[0];
    assert!(
        first.id.starts_with("book-") && first.id.len() == 17,
        "{}",
        first.id
    );
    assert_eq!(
        b.items()[1].id,
        first.id,
        "the id does not depend on file order"
    );
    assert_ne!(a.items()[1].id, first.id);
    assert_eq!(
        first.tags.get("author"),
        Some(&TagValue::One("코르넬리아 토프 지음".into()))
    );
    assert_eq!(
        first.tags.get("subtitle"),
        Some(&TagValue::One("말이 넘쳐나는 세상 속".into()))
    );
    assert!(!a.items()[1].tags.contains_key("subtitle"));
    let text = first.text_for_index();
    assert!(text.contains("코르넬리아 토프") && text.contains("침묵을 배우는 시간"));
    // Same title, another author: another book.
    let twins = r#"[{"title":"허수아비 일기","author":"싼마오"},{"title":"허수아비 일기","author":"싼마오 지음, 이지영 옮김"}]"#;
    assert_eq!(
        Catalog::parse("books", twins, CatalogFormat::Json)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn richer_book_records_keep_isbn_genre_contents_and_description() {
    let text = r#"{"title":"A : B","author":"X","isbn":9788936434120,"genre":["에세이","심리학"],"contents":"1장 불안","description":"위로"}
{"id":"given","title":"C","author":"Y","genre":"소설"}"#;
    let catalog = jsonl(text).unwrap();
    let first = &catalog.items()[0];
    assert_eq!(first.id, "9788936434120");
    assert_eq!(first.extra["isbn"], serde_json::json!("9788936434120"));
    assert!(first.tags["genre"].matches("심리학"));
    assert_eq!(first.description.as_deref(), Some("위로"));
    assert!(first.text_for_index().contains("1장 불안"));
    assert_eq!(catalog.items()[1].id, "given");
    assert!(catalog.items()[1].tags["genre"].matches("소설"));
    for bad in [
        r#"{"title":"A","author":3}"#,
        r#"{"title":"A","isbn":[1]}"#,
        r#"{"title":"A","author":"X","genre":[1]}"#,
    ] {
        assert!(
            matches!(jsonl(bad), Err(CatalogError::InvalidField { .. })),
            "{bad}"
        );
    }
    // Not book-shaped: the id stays required.
    assert!(matches!(
        jsonl(r#"{"title":"A"}"#),
        Err(CatalogError::MissingField { .. })
    ));
}

#[test]
fn the_library_books_file_loads_when_present() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/books/library_books_title_author.json");
    if !path.exists() {
        eprintln!("skipping: {} is absent", path.display());
        return;
    }
    let catalog = Catalog::from_path(&path).unwrap();
    assert_eq!(catalog.len(), 1388);
    assert!(catalog
        .items()
        .iter()
        .all(|item| item.id.starts_with("book-") && item.tags.contains_key("author")));
}

#[test]
fn book_csv_files_need_no_id_column() {
    let text = "title,author,isbn\n지명발견록,이경교 지음,\n각본 없음 : 삶의 다음 페이지,아비 모건 지음,9791190000000\n";
    let catalog = Catalog::parse("books", text, CatalogFormat::Csv).unwrap();
    assert!(catalog.items()[0].id.starts_with("book-"));
    assert_eq!(catalog.items()[1].id, "9791190000000");
    assert!(catalog.items()[1].tags["subtitle"].matches("삶의 다음 페이지"));
    assert!(matches!(
        Catalog::parse("x", "title,price\nA,3\n", CatalogFormat::Csv),
        Err(CatalogError::MissingColumn { column: "id" })
    ));
}
