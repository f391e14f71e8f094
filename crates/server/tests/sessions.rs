//! The session store against its contract: round trips, bounded history, isolation by id, no
//! lost turns under concurrency (one store and two stores on one file), restarts, migrations, and
//! a writer killed with SIGKILL mid-write leaving a consistent database.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sprout_server::sessions::{
    Role, Session, SessionError, SessionId, SessionStore, SessionsConfig, SqliteSessionStore, Turn,
    SESSIONS_FILE_NAME,
};

fn id(raw: &str) -> SessionId {
    SessionId::parse(raw).expect("test ids are valid")
}

fn config(history_limit: usize) -> SessionsConfig {
    SessionsConfig {
        history_limit,
        ..SessionsConfig::default()
    }
}

fn user(text: &str) -> Turn {
    Turn::new(Role::User, text, 1)
}

fn texts(session: &Session) -> Vec<&str> {
    session.history.iter().map(|t| t.text.as_str()).collect()
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn sessions_round_trip_every_field() {
    let store = SqliteSessionStore::open_in_memory(&config(6)).unwrap();
    let sid = id("user-1:chat.2");
    assert_eq!(store.load(&sid).await.unwrap(), None);

    let stored = store
        .update(
            &sid,
            Box::new(|s| {
                s.category = Some("ZERO_WASTE".into());
                s.base_category = Some("PLOGGING".into());
                s.location = Some("도심".into());
                s.work_type = Some("사무직".into());
                s.history.push(Turn::new(Role::User, "안녕하세요", 10));
                s.history
                    .push(Turn::new(Role::Assistant, "1. 텀블러 사용하기", 11));
            }),
        )
        .await
        .unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(store.load(&sid).await.unwrap(), Some(stored.clone()));
    assert_eq!(stored.category.as_deref(), Some("ZERO_WASTE"));
    assert_eq!(stored.base_category.as_deref(), Some("PLOGGING"));
    assert_eq!(stored.location.as_deref(), Some("도심"));
    assert_eq!(stored.work_type.as_deref(), Some("사무직"));
    assert_eq!(texts(&stored), ["안녕하세요", "1. 텀블러 사용하기"]);
    assert_eq!(stored.history[1].role, Role::Assistant);
    assert_eq!(stored.history[1].at_ms, 11);
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn sessions_history_is_bounded_to_the_limit() {
    let store = SqliteSessionStore::open_in_memory(&config(6)).unwrap();
    let sid = id("s");
    for i in 0..10 {
        store
            .append_turn(&sid, user(&format!("t{i}")))
            .await
            .unwrap();
    }
    let session = store.load(&sid).await.unwrap().unwrap();
    assert_eq!(texts(&session), ["t4", "t5", "t6", "t7", "t8", "t9"]);
    assert_eq!(session.version, 10);

    // An update that pushes many turns at once is trimmed too, and so is a save.
    let pushed = store
        .update(
            &sid,
            Box::new(|s| s.history.extend((0..20).map(|i| user(&format!("u{i}"))))),
        )
        .await
        .unwrap();
    assert_eq!(texts(&pushed), ["u14", "u15", "u16", "u17", "u18", "u19"]);
    let mut long = pushed.clone();
    long.history = (0..9).map(|i| user(&format!("v{i}"))).collect();
    let saved = store.save(&long).await.unwrap();
    assert_eq!(texts(&saved), ["v3", "v4", "v5", "v6", "v7", "v8"]);
}

#[tokio::test]
async fn sessions_are_isolated_by_id() {
    let store = SqliteSessionStore::open_in_memory(&config(6)).unwrap();
    let (a, b) = (id("a"), id("b"));
    store.append_turn(&a, user("for a")).await.unwrap();
    store
        .update(&b, Box::new(|s| s.category = Some("B".into())))
        .await
        .unwrap();
    let loaded_a = store.load(&a).await.unwrap().unwrap();
    let loaded_b = store.load(&b).await.unwrap().unwrap();
    assert_eq!(texts(&loaded_a), ["for a"]);
    assert_eq!(loaded_a.category, None);
    assert!(loaded_b.history.is_empty());
    assert_eq!(loaded_b.category.as_deref(), Some("B"));
    // Ids differing only by case or a prefix are different sessions.
    assert_eq!(store.load(&id("A")).await.unwrap(), None);
    assert_eq!(store.load(&id("a:")).await.unwrap(), None);

    assert!(store.delete(&a).await.unwrap());
    assert!(!store.delete(&a).await.unwrap());
    assert_eq!(store.load(&a).await.unwrap(), None);
    assert_eq!(store.load(&b).await.unwrap(), Some(loaded_b));
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn sessions_an_edit_cannot_write_another_session() {
    let store = SqliteSessionStore::open_in_memory(&config(6)).unwrap();
    let (victim, attacker) = (id("victim"), id("attacker"));
    store.append_turn(&victim, user("mine")).await.unwrap();
    let stored = store
        .update(
            &attacker,
            Box::new(|s| {
                s.id = SessionId::parse("victim").unwrap();
                s.version = 99;
                s.history.push(user("overwrite"));
            }),
        )
        .await
        .unwrap();
    assert_eq!(stored.id, attacker);
    assert_eq!(stored.version, 1);
    assert_eq!(
        texts(&store.load(&victim).await.unwrap().unwrap()),
        ["mine"]
    );
    assert_eq!(
        texts(&store.load(&attacker).await.unwrap().unwrap()),
        ["overwrite"]
    );
}

#[tokio::test]
async fn sessions_invalid_ids_are_a_typed_error() {
    let err: SessionError = SessionId::parse("../etc/passwd").unwrap_err().into();
    assert!(matches!(err, SessionError::InvalidId(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "session id has '/' at byte 2; only A-Z a-z 0-9 _ - . : are allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_concurrent_appends_to_one_session_lose_no_turn() {
    for (limit, expected_len) in [(64, 16), (6, 6)] {
        let store: Arc<dyn SessionStore> =
            Arc::new(SqliteSessionStore::open_in_memory(&config(limit)).unwrap());
        let sid = id("shared");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, sid) = (store.clone(), sid.clone());
                tokio::spawn(
                    async move { store.append_turn(&sid, user(&format!("turn {i}"))).await },
                )
            })
            .collect();
        let mut versions = BTreeSet::new();
        for task in tasks {
            versions.insert(task.await.unwrap().unwrap().version);
        }
        // Every append saw the one before it: versions 1..=16, each once.
        assert_eq!(versions, (1..=16).collect::<BTreeSet<u64>>());
        let session = store.load(&sid).await.unwrap().unwrap();
        assert_eq!(session.version, 16);
        assert_eq!(session.history.len(), expected_len);
        let all: BTreeSet<String> = (0..16).map(|i| format!("turn {i}")).collect();
        let got: BTreeSet<String> = session.history.iter().map(|t| t.text.clone()).collect();
        assert_eq!(got.len(), expected_len, "no turn twice");
        assert!(got.is_subset(&all));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_two_stores_on_one_file_lose_no_update() {
    // Two stores on one file stand for two replicas: their read-modify-writes interleave only
    // through SQLite's write lock.
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Arc<dyn SessionStore>> = (0..2)
        .map(|_| {
            Arc::new(SqliteSessionStore::open(dir.path(), &config(6)).unwrap())
                as Arc<dyn SessionStore>
        })
        .collect();
    let sid = id("counter");
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..8 {
            let (store, sid) = (store.clone(), sid.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    store
                        .update(
                            &sid,
                            Box::new(|s| {
                                let n: u64 =
                                    s.category.as_deref().map_or(0, |c| c.parse().unwrap());
                                s.category = Some((n + 1).to_string());
                            }),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    for store in &stores {
        let session = store.load(&sid).await.unwrap().unwrap();
        assert_eq!(session.category.as_deref(), Some("160"));
        assert_eq!(session.version, 160);
    }
}

#[tokio::test]
async fn sessions_save_refuses_a_record_changed_since_loaded() {
    let store = SqliteSessionStore::open_in_memory(&config(6)).unwrap();
    let sid = id("s");
    // A session never stored saves at version 0.
    let fresh = Session::new(sid.clone(), 0);
    let first = store.save(&fresh).await.unwrap();
    assert_eq!(first.version, 1);
    match store.save(&fresh).await {
        Err(SessionError::Conflict {
            id,
            expected: 0,
            stored: 1,
        }) => assert_eq!(id, "s"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let mut slow = store.load(&sid).await.unwrap().unwrap();
    store.append_turn(&sid, user("meanwhile")).await.unwrap();
    slow.history.push(user("late"));
    let err = store.save(&slow).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "session s changed since it was loaded: it is at version 2, the save expected 1"
    );
    // The turn written meanwhile is still there.
    let now = store.load(&sid).await.unwrap().unwrap();
    assert_eq!(texts(&now), ["meanwhile"]);
    // Reloading and saving again succeeds.
    let mut retry = now.clone();
    retry.history.push(user("late"));
    assert_eq!(
        texts(&store.save(&retry).await.unwrap()),
        ["meanwhile", "late"]
    );
}

#[tokio::test]
async fn sessions_are_stamped_and_expired_by_the_clock() {
    let now = Arc::new(AtomicU64::new(1_000));
    let clock_now = now.clone();
    let store = SqliteSessionStore::open_in_memory(&config(6))
        .unwrap()
        .with_clock(Arc::new(move || clock_now.load(Ordering::SeqCst)));
    for (t, name) in [(1_000, "a"), (2_000, "b"), (3_000, "c")] {
        now.store(t, Ordering::SeqCst);
        store.append_turn(&id(name), user(name)).await.unwrap();
    }
    now.store(4_000, Ordering::SeqCst);
    let a = store.append_turn(&id("a"), user("again")).await.unwrap();
    assert_eq!((a.created_ms, a.updated_ms), (1_000, 4_000));

    assert_eq!(store.expire_older_than(2_000).await.unwrap(), 0);
    assert_eq!(store.expire_older_than(3_500).await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 1);
    assert!(store.load(&id("a")).await.unwrap().is_some());
    assert_eq!(store.load(&id("b")).await.unwrap(), None);
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sid = id("persistent");
    let written = {
        let store = SqliteSessionStore::open(dir.path(), &config(6)).unwrap();
        store
            .append_turn(&sid, user("before restart"))
            .await
            .unwrap();
        let written = store
            .update(&sid, Box::new(|s| s.category = Some("ECO".into())))
            .await
            .unwrap();
        store.close().await.unwrap();
        assert!(matches!(store.load(&sid).await, Err(SessionError::Closed)));
        store.close().await.unwrap();
        written
    };
    let path = dir.path().join(SESSIONS_FILE_NAME);
    assert!(path.is_file());
    assert_eq!(user_version(&path), 2);

    let store = SqliteSessionStore::open(dir.path(), &config(6)).unwrap();
    assert_eq!(store.load(&sid).await.unwrap(), Some(written));
    // Dropped without close: the next open still sees every committed write.
    store.append_turn(&sid, user("second life")).await.unwrap();
    drop(store);
    let store = SqliteSessionStore::open(dir.path(), &config(6)).unwrap();
    let session = store.load(&sid).await.unwrap().unwrap();
    assert_eq!(texts(&session), ["before restart", "second life"]);
    assert_eq!(session.version, 3);
}

#[tokio::test]
async fn sessions_database_at_version_0_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SESSIONS_FILE_NAME);
    std::fs::write(&path, b"").unwrap(); // an empty file is a valid SQLite database, version 0
    assert_eq!(user_version(&path), 0);

    let store = SqliteSessionStore::open(dir.path(), &config(6)).unwrap();
    store.append_turn(&id("m"), user("migrated")).await.unwrap();
    assert_eq!(user_version(&path), 2);
    let report = store.check().await.unwrap();
    assert_eq!(report.integrity_check, "ok");
    assert_eq!(report.sessions, 1);
}

#[tokio::test]
async fn sessions_database_at_an_unknown_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SESSIONS_FILE_NAME);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE future (x); PRAGMA user_version = 3;")
        .unwrap();

    match SqliteSessionStore::open(dir.path(), &config(6)) {
        Err(
            err @ SessionError::UnknownSchema {
                found: 3,
                supported: 2,
                ..
            },
        ) => {
            assert_eq!(
                err.to_string(),
                format!(
                    "session database {} has schema version 3; this sprout knows versions 0 to 2 \
                     (upgrade sprout or use another data directory)",
                    path.display()
                )
            );
        }
        Err(other) => panic!("expected UnknownSchema, got {other:?}"),
        Ok(_) => panic!("a database of an unknown version was opened"),
    }
    // Refused, not touched.
    assert_eq!(user_version(&path), 3);
}

#[tokio::test]
async fn sessions_a_panicking_edit_changes_nothing() {
    let store = SqliteSessionStore::open_in_memory(&config(6)).unwrap();
    let sid = id("p");
    store.append_turn(&sid, user("kept")).await.unwrap();
    let err = store
        .update(
            &sid,
            Box::new(|s| {
                s.history.clear();
                panic!("edit fails halfway");
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SessionError::EditPanicked { ref id } if id == "p"),
        "{err:?}"
    );
    let session = store.load(&sid).await.unwrap().unwrap();
    assert_eq!((texts(&session), session.version), (vec!["kept"], 1));
}

/// The environment variable that turns [`sessions_kill9_child_writer`] into the writer that
/// [`sessions_survive_kill_9_mid_write`] kills: it names the data directory.
const CHILD_DIR_VAR: &str = "SPROUT_SESSIONS_KILL9_CHILD_DIR";

/// Not a test on its own: run by [`sessions_survive_kill_9_mid_write`] as a child process, it
/// writes sessions as fast as it can and prints a line after each committed write.
#[test]
#[ignore = "the child half of sessions_survive_kill_9_mid_write"]
fn sessions_kill9_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteSessionStore::open(Path::new(&dir), &config(6)).unwrap();
        let mut out = std::io::stdout().lock();
        // Large enough records that the WAL grows and checkpoints while we are being killed.
        let padding = "가".repeat(700);
        let started = Instant::now();
        // Bounded, so that a child whose parent died does not write forever.
        for i in 0..1_000_000u64 {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            store
                .append_turn(&id(&format!("s{i}")), user(&format!("t{i} {padding}")))
                .await
                .unwrap();
            writeln!(out, "committed s{i}").unwrap();
            store
                .append_turn(&id("hot"), user(&format!("h{i} {padding}")))
                .await
                .unwrap();
            writeln!(out, "hot {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn sessions_survive_kill_9_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "sessions_kill9_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Read the child's lines on a thread, so that waiting for the first one can time out.
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: it does not report a commit.
                Ok(_) if line.ends_with('\n') => {
                    if lines_tx.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let first = lines_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child writer reports its first commit");
    let mut lines = vec![first];
    while !lines.last().unwrap().starts_with("committed ") {
        lines.push(lines_rx.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );
    reader.join().unwrap();
    lines.extend(lines_rx.try_iter());

    let committed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("committed "))
        .collect();
    let last_hot: Option<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("hot "))
        .map(|n| n.parse().unwrap())
        .max();
    assert!(committed.len() > 1, "the child wrote before it was killed");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteSessionStore::open(dir.path(), &config(6)).unwrap();
        let report = store.check().await.unwrap();
        assert_eq!(report.integrity_check, "ok");
        let reported = committed.len() as u64 + u64::from(last_hot.is_some());
        assert!(
            report.sessions >= reported,
            "{} sessions stored, {reported} reported committed",
            report.sessions
        );
        assert_eq!(report.sessions, store.count().await.unwrap());
        for name in &committed {
            let session = store.load(&id(name)).await.unwrap().unwrap();
            let text = &session.history[0].text;
            assert!(text.starts_with(&format!("t{} ", &name[1..])), "{name}");
        }
        if let Some(last_hot) = last_hot {
            let hot = store.load(&id("hot")).await.unwrap().unwrap();
            assert_eq!(hot.history.len(), 6.min(last_hot as usize + 1));
            let newest: u64 = hot.history.last().unwrap().text[1..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                newest >= last_hot,
                "hot turn h{last_hot} was reported committed"
            );
            assert!(hot.version > last_hot);
        }
    });
}
