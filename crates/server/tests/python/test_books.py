"""The book recommender's contract (../shared/BOOKS_API.md) against a running `sprout serve` on the
default model with `--catalog books=<library_books_title_author.json>`, with a real SSE client
(httpx-sse).

Run: start `sprout serve --port 9000 --api-key test-key --catalog books=$PWD/../shared/data/books/library_books_title_author.json`,
then SPROUT_URL=http://127.0.0.1:9000/v1 SPROUT_API_KEY=test-key pytest -q crates/server/tests/python/test_books.py
The data files are read from SPROUT_BOOKS_DATA (default: ../shared/data/books from the repo root).
"""
import json
import os
import pathlib
import re
import time
import unicodedata

import httpx
import pytest
from httpx_sse import connect_sse

V1 = os.environ.get("SPROUT_URL", "http://127.0.0.1:9000/v1")
BASE = V1.rsplit("/v1", 1)[0]
KEY = os.environ.get("SPROUT_API_KEY", "test-key")
ROOT = pathlib.Path(__file__).resolve().parents[4]
DATA = pathlib.Path(os.environ.get("SPROUT_BOOKS_DATA", ROOT / ".." / "shared" / "data" / "books"))

QUESTIONS = [
    ("지금 당신의 기분을 가장 잘 설명하는 단어는 무엇인가요?", "예시: 행복함, 지침, 불안함, 우울함, 설렘, 혼란스러움 등"),
    ("지금 이 책을 통해 어떤 감정을 경험하고 싶으신가요?", "예시: 현실 도피, 공감, 위로, 영감/동기부여, 새로운 시각 등"),
    ("현재 어떤 직업을 가지고 계신가요?", "예시: 학생, 직장인, 프리랜서, 주부, 구직자 등"),
    ("지금 어떤 상황에서 독서를 하실 예정인가요?", "예시: 잠들기 전 휴식, 이동 중 짧은 시간, 주말 여유로운 시간, 스트레스 해소 등"),
    ("지금 어느 정도의 집중도가 필요한 책을 원하시나요?", "예시: 가볍게 읽을 수 있는 책, 깊은 사고가 필요한 책, 빠르게 몰입할 수 있는 책"),
]
FIELDS = ["user_emotion", "desired_emotional_effect", "occupation", "reading_context", "focus_level"]
TC1 = dict(zip(FIELDS, ["불안함", "위로와 안정감", "직장인", "잠들기 전 독서", "가볍게 읽을 수 있는 책"]))
TC2 = dict(zip(FIELDS, ["우울함", "위로와 안정감", "학생", "이동 중 짧은 시간", "빠르게 몰입할 수 있는 책"]))
USER = "py-books-user"

ITEM = (r"(\d)\. \*\*\[([^\]\n]+)\]\*\* - ([^\n]*)\n"
        r"   - 추천 이유: ([^\n]+)\n"
        r"   - 이 책이 도움이 될 수 있는 이유: ([^\n]+)")
RESULT = re.compile(ITEM + r"\n\n" + ITEM + r"\n\n" + ITEM)
SENTENCE = re.compile(r"[가-힣0-9][가-힣0-9 ,.!?]{7,80}니다\.")


def norm(text):
    return "".join(c for c in unicodedata.normalize("NFC", text).lower() if c.isalnum())


def main_title(title):
    return norm(title.split(" : ", 1)[0])


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def catalog():
    books = json.loads((DATA / "library_books_title_author.json").read_text(encoding="utf-8"))
    # Some records carry stray spaces; sprout trims authors (titles are kept as they are).
    return {b["title"]: b["author"].strip() for b in books}


@pytest.fixture(scope="module")
def served(http):
    r = http.get(V1 + "/catalogs", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    listed = r.json()
    names = [c.get("name") for c in (listed.get("data") or listed.get("catalogs") or [])]
    if "books" not in names:
        if os.environ.get("SPROUT_REQUIRE_MODELS"):
            pytest.fail("the server serves no books catalog (start it with --catalog books=FILE)")
        pytest.skip(f"no books catalog served ({names})")


@pytest.fixture(scope="module")
def user(http, served):
    history = (DATA / "test-case" / "user_reading_history.json").read_bytes()
    prefs = (DATA / "test-case" / "user_reading_preferences.json").read_bytes()
    for path, body in [("history", history), ("preferences", prefs)]:
        r = http.put(f"{BASE}/api/users/{USER}/{path}", content=body,
                     headers={"content-type": "application/json"})
        assert r.status_code == 204, r.text
    return json.loads(history), json.loads(prefs)["preferences"]


def usage_of(headers):
    usage = json.loads(headers["x-sprout-usage"])
    assert set(usage) == {"prompt_tokens", "completion_tokens", "cached_tokens", "forced_tokens"}
    assert all(isinstance(v, int) and v >= 0 for v in usage.values())
    return usage


def check_result(body, catalog):
    result, books = body["result"], body["books"]
    m = RESULT.fullmatch(result)
    assert m, result
    groups = m.groups()
    assert [groups[i] for i in (0, 5, 10)] == ["1", "2", "3"]
    assert len(books) == 3 and len({b["title"] for b in books}) == 3, books
    for i, b in enumerate(books):
        number, title, author, reason, benefit = groups[5 * i:5 * i + 5]
        assert (title, author, reason, benefit) == (b["title"], b["author"], b["reason"], b["benefit"])
        assert b["title"] in catalog, b["title"]
        assert b["author"] == catalog[b["title"]] or b["title"] == "허수아비 일기"
        for text in (reason, benefit):
            assert SENTENCE.fullmatch(text), text
            assert not re.search(r"[A-Za-z{}\[\]\"]", text), text


def test_all_five_questions_then_completed(http):
    for index, (q, example) in enumerate(QUESTIONS):
        r = http.get(BASE + "/api/questions", params={"index": index})
        assert r.status_code == 200
        assert r.json() == {"completed": False, "question": {"q": q, "example": example}}
    assert http.get(BASE + "/api/questions").json()["question"]["q"] == QUESTIONS[0][0]
    for index in [5, 6, 100, 10**30]:
        r = http.get(BASE + "/api/questions", params={"index": index})
        assert (r.status_code, r.json()) == (200, {"completed": True})


@pytest.mark.parametrize("index,kind", [("-1", "greater_than_equal"), ("abc", "int_parsing"),
                                        ("1.5", "int_parsing"), ("", "int_parsing")])
def test_a_bad_index_is_a_fastapi_422(http, index, kind):
    r = http.get(BASE + "/api/questions", params={"index": index})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert (error["loc"], error["type"]) == (["query", "index"], kind)
    assert error["msg"]


@pytest.mark.parametrize("missing", FIELDS)
def test_each_missing_field_is_a_fastapi_422(http, missing):
    body = {k: v for k, v in TC1.items() if k != missing}
    r = http.post(BASE + "/api/recommend-books", json=body)
    assert r.status_code == 422
    assert r.json()["detail"] == [{"type": "missing", "loc": ["body", missing], "msg": "Field required",
                                   "input": body}]


def test_wrong_types_and_bodies_are_422(http):
    r = http.post(BASE + "/api/recommend-books", json={**TC1, "occupation": 3, "method": 7})
    assert r.status_code == 422
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [
        (["body", "occupation"], "string_type"), (["body", "method"], "literal_error")]
    r = http.post(BASE + "/api/recommend-books", content=b"{nope",
                  headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["detail"][0]["type"]) == (422, "json_invalid")
    r = http.post(BASE + "/api/recommend-books", json=[TC1])
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["body"])
    # Streaming requests are validated the same way, before any event.
    r = http.post(BASE + "/api/recommend-books", json={}, headers={"accept": "text/event-stream"})
    assert r.status_code == 422 and len(r.json()["detail"]) == 5


def test_user_records_are_validated_stored_and_read_back(http, user):
    history, prefs = user
    r = http.get(f"{BASE}/api/users/{USER}/history")
    assert r.status_code == 200
    assert [b["title"] for b in r.json()["read_books"]] == [b["title"] for b in history["read_books"]]
    r = http.get(f"{BASE}/api/users/{USER}/preferences")
    assert r.json()["preferences"]["avoid_topics"] == prefs["avoid_topics"]
    r = http.put(f"{BASE}/api/users/{USER}/history", json={"read_books": [{"author": "x"}]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "read_books", 0, "title"]
    r = http.put(f"{BASE}/api/users/{USER}/preferences", json={"preferences": {"keywords": "불안"}})
    assert (r.status_code, r.json()["detail"][0]["type"]) == (422, "list_type")
    r = http.put(f"{BASE}/api/users/bad%20id/history", json={"read_books": []})
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["path", "user_id"])
    assert http.get(f"{BASE}/api/users/py-nobody/history").status_code == 404


def test_a_recommendation_is_markdown_in_the_originals_format(http, catalog, served):
    r = http.post(BASE + "/api/recommend-books", json=TC1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == 1
    check_result(body, catalog)
    usage = usage_of(r.headers)
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_the_stream_sends_deltas_three_books_then_done(http, catalog, served):
    names, deltas, books, done = [], [], [], None
    with connect_sse(http, "POST", BASE + "/api/recommend-books", json=TC2,
                     headers={"accept": "text/event-stream"}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["x-accel-buffering"] == "no"
        for event in source.iter_sse():
            names.append(event.event)
            data = json.loads(event.data)
            if event.event == "delta":
                assert set(data) == {"text"} and data["text"]
                deltas.append(data["text"])
            elif event.event == "book":
                books.append(data)
            elif event.event == "done":
                done = data
            else:
                pytest.fail(f"unexpected event {event.event}: {event.data}")
    assert names[0] == "delta" and names[-1] == "done" and names.count("done") == 1
    assert done is not None
    assert "".join(deltas) == done["result"]
    assert [b["index"] for b in books] == [0, 1, 2]
    assert [(b["title"], b["author"]) for b in books] == [(b["title"], b["author"]) for b in done["books"]]
    check_result(done, catalog)
    assert set(done["usage"]) == {"prompt_tokens", "completion_tokens", "cached_tokens", "forced_tokens"}
    # No JSON syntax leaks into the text.
    assert '"' not in done["result"] and "{" not in done["result"]


@pytest.mark.parametrize("case", ["TC1", "TC2"])
@pytest.mark.parametrize("method", [1, 2])
def test_the_test_user_gets_unread_books_off_avoided_topics(http, catalog, user, case, method):
    history, prefs = user
    answers = TC1 if case == "TC1" else TC2
    r = http.post(BASE + "/api/recommend-books", json={**answers, "userId": USER, "method": method})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == method
    check_result(body, catalog)
    read = {main_title(b["title"]) for b in history["read_books"]} | {norm(b["title"]) for b in history["read_books"]}
    for b in body["books"]:
        assert norm(b["title"]) not in read and main_title(b["title"]) not in read, b["title"]
        for topic in prefs["avoid_topics"]:
            assert norm(topic) not in norm(b["title"]), (topic, b["title"])
    print(case, method, [b["title"] for b in body["books"]], usage_of(r.headers))


def test_rag_reads_fewer_prompt_tokens_than_prompt_only(http, user):
    tokens = {}
    for method in (1, 2):
        r = http.post(BASE + "/api/recommend-books", json={**TC1, "userId": USER, "method": method})
        assert r.status_code == 200, r.text
        tokens[method] = usage_of(r.headers)["prompt_tokens"]
    assert tokens[1] < tokens[2], tokens


def metric(http, name):
    for line in http.get(BASE + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def test_a_disconnected_stream_cancels_its_generation(http, served):
    before = metric(http, "sprout_sequences_cancelled_total")
    body = {**TC1, "occupation": "프리랜서"}
    with connect_sse(http, "POST", BASE + "/api/recommend-books", json=body,
                     headers={"accept": "text/event-stream"}) as source:
        first = next(iter(source.iter_sse()))
        assert first.event == "delta"
    # The client left after the first fragment: the generation stops at the next step.
    deadline = time.monotonic() + 30
    while metric(http, "sprout_sequences_cancelled_total") <= before:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.05)
