//! The real `sprout catalog` binary on a temporary data directory (`--home`): ingest, list,
//! show and search; a bad file is refused naming its line and leaves nothing behind.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn sprout(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sprout"))
        .arg("catalog")
        .args(args)
        .arg("--home")
        .arg(home)
        .env_remove("SPROUT_HOME")
        .output()
        .expect("sprout runs")
}

/// stdout of a run that must succeed.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = sprout(home, args);
    assert!(
        out.status.success(),
        "sprout catalog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const BOOKS: &str = r#"{"id": "b1", "title": "Walden", "description": "life in the woods", "tags": {"genre": "essay"}}
{"id": "b2", "title": "The Overstory", "description": "a novel of trees", "tags": {"genre": "novel"}}

{"id": "b3", "title": "Silent Spring", "description": "pesticides and birds", "tags": {"genre": "essay"}, "year": 1962}
"#;

#[test]
fn ingest_list_show_and_search() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("books.jsonl");
    std::fs::write(&file, BOOKS).unwrap();

    let ingested = ok(
        home.path(),
        &["ingest", file.to_str().unwrap(), "--name", "books"],
    );
    assert!(
        ingested.contains("ingested 3 items as catalog books"),
        "{ingested}"
    );
    assert!(ingested.contains("lexical index built"), "{ingested}");
    let items = home.path().join("catalogs/books/items.jsonl");
    let stored: Vec<Value> = std::fs::read_to_string(&items)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored[2]["year"], 1962,
        "fields beyond the known ones are kept"
    );
    assert!(home
        .path()
        .join("catalogs/books/index/lexical/manifest.json")
        .is_file());
    // Ingesting the same content again keeps the index.
    let again = ok(
        home.path(),
        &["ingest", file.to_str().unwrap(), "--name", "books"],
    );
    assert!(again.contains("lexical index unchanged, reused"), "{again}");

    let list = ok(home.path(), &["list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(&rows[0][..2], ["eco", "107"]);
    assert_eq!(rows[0][3..], ["built", "in"]);
    assert_eq!(&rows[1][..2], ["books", "3"]);
    assert_eq!(rows[1][2].len(), 12, "a content hash prefix: {list}");
    assert!(rows[1][3].ends_with("books.jsonl"), "{list}");

    let show: Value = serde_json::from_str(&ok(
        home.path(),
        &["show", "books", "--limit", "2", "--json"],
    ))
    .unwrap();
    assert_eq!(show["total"], 3);
    let shown: Vec<_> = show["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["b1", "b2"]);
    let text = ok(home.path(), &["show", "books"]);
    assert!(text.contains("b3  Silent Spring  genre=essay"), "{text}");
    assert!(text.ends_with("(3 of 3 items)\n"), "{text}");

    let found: Value = serde_json::from_str(&ok(
        home.path(),
        &["search", "books", "woods trees", "--json"],
    ))
    .unwrap();
    let ids: Vec<_> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"b1") && ids.contains(&"b2"), "{found}");
    assert!(found["results"][0]["score"].as_f64().unwrap() > 0.0);
    let essays: Value = serde_json::from_str(&ok(
        home.path(),
        &[
            "search",
            "books",
            "woods trees birds",
            "--filter",
            "genre=essay",
            "-k",
            "5",
            "--json",
        ],
    ))
    .unwrap();
    let genres: Vec<_> = essays["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["tags"]["genre"].as_str().unwrap())
        .collect();
    assert_eq!(genres, ["essay", "essay"]);
    let eco = ok(
        home.path(),
        &[
            "search",
            "eco",
            "텀블러",
            "--filter",
            "category:ZERO_WASTE",
            "-k",
            "1",
        ],
    );
    assert!(eco.contains("eco-zero-waste-01"), "{eco}");
}

#[test]
fn a_bad_file_or_name_is_refused_and_nothing_is_stored() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"id\": \"a\", \"title\": \"A\"}\n{\"id\": \"b\", \"description\": \"no title\"}\n",
    )
    .unwrap();
    let out = sprout(
        home.path(),
        &["ingest", file.to_str().unwrap(), "--name", "bad"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: item has no `title`"), "{stderr}");
    assert!(!home.path().join("catalogs/bad").exists());

    let good = home.path().join("good.jsonl");
    std::fs::write(&good, "{\"id\": \"a\", \"title\": \"A\"}\n").unwrap();
    for (name, says) in [("eco", "built-in"), ("Bad Name", "a-z"), ("", "1 to 64")] {
        let out = sprout(
            home.path(),
            &["ingest", good.to_str().unwrap(), "--name", name],
        );
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    let out = sprout(home.path(), &["search", "nope", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("unknown catalog nope: known catalogs are eco"));
    let out = sprout(home.path(), &["search", "eco", "x", "--filter", "category"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--filter"));
}
