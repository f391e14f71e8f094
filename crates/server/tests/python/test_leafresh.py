"""The Leafresh contract (../shared/LEAFRESH_API.md) against a running `sprout serve` on the
default model, the eco catalog and the embedder, with a real SSE client (httpx-sse).

Run: start `sprout serve --port 9000 --api-key test-key`, then
  SPROUT_URL=http://127.0.0.1:9000/v1 SPROUT_API_KEY=test-key pytest -q crates/server/tests/python
"""
import json
import os
import time
import urllib.parse

import httpx
import pytest
from httpx_sse import connect_sse

V1 = os.environ.get("SPROUT_URL", "http://127.0.0.1:9000/v1")
BASE = V1.rsplit("/v1", 1)[0]
KEY = os.environ.get("SPROUT_API_KEY", "test-key")
PATH = BASE + "/ai/chatbot/recommendation"
CATEGORIES = {"ZERO_WASTE": "제로웨이스트", "PLOGGING": "플로깅", "CARBON_FOOTPRINT": "탄소발자국",
              "ENERGY_SAVING": "에너지 절약", "UPCYCLING": "업사이클", "MEDIA": "문화 공유",
              "DIGITAL_CARBON": "디지털 탄소", "VEGAN": "비건"}
OFF_TOPIC = "저는 친환경 챌린지를 추천해드리는 Leafresh 챗봇이에요! 환경 관련 질문을 해주시면 더 잘 도와드릴 수 있어요."


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def eco(http):
    r = http.get(V1 + "/catalogs/eco/items", params={"limit": 1000},
                 headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    return {i["title"]: i for i in r.json()["items"]}


def check_answer(data, eco, category=None):
    assert data["recommend"].endswith("니다.")
    challenges = data["challenges"]
    assert len(challenges) == 3
    titles = [c["title"] for c in challenges]
    assert len(set(titles)) == 3, titles
    for c in challenges:
        item = eco[c["title"]]  # exists in the catalog
        assert c["description"] == item["description"]
        assert c["category"] == item["tags"]["category"]
        if category:
            assert c["category"] == category
        if "label" in c:
            assert c["label"] == CATEGORIES[c["category"]]


def test_base_info_json_answers_three_catalog_challenges_in_the_category(http, eco):
    for cat, label in [("ENERGY_SAVING", "에너지 절약"), ("PLOGGING", "플로깅"), ("UPCYCLING", "UPCYCLE")]:
        r = http.post(PATH + "/base-info", json={"sessionId": "py-base", "location": "도시",
                                                "workType": "사무직", "category": label})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == 200
        assert body["message"] == "사용자 기본 정보 키워드 선택을 기반으로 챌린지를 추천합니다."
        check_answer(body["data"], eco, cat)


@pytest.mark.parametrize("body,status,message,data", [
    ({"location": "도시", "workType": "사무직"}, 400, "['category']은 필수입니다.", None),
    ({"workType": " ", "category": "비건"}, 400, "['location', 'workType']은 필수입니다.", None),
    ({"location": "도시", "workType": "사무직", "category": "우주"}, 400,
     "유효하지 않은 선택 항목이 포함되어 있습니다.", {"invalidFields": ["category"]}),
    ({"location": 3, "workType": "사무직", "category": "비건"}, 422,
     "필수 항목이 누락되었거나 형식이 잘못되었습니다.", None),
])
def test_base_info_validation_comes_before_any_model_work(http, body, status, message, data):
    t = time.monotonic()
    r = http.post(PATH + "/base-info", json=body)
    took_ms = (time.monotonic() - t) * 1000
    assert (r.status_code, r.json()) == (status, {"status": status, "message": message, "data": data})
    print(f"validation answered in {took_ms:.1f} ms")


def test_free_text_json_validation_and_off_topic(http):
    r = http.post(PATH + "/free-text", json={"message": "  "})
    assert (r.status_code, r.json()["message"]) == (400, "['message']은 필수입니다.")
    r = http.post(PATH + "/free-text", json={"message": "환경"})
    assert (r.status_code, r.json()["message"]) == (422, "message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.")
    r = http.post(PATH + "/free-text", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422
    for msg in ["주식 투자 어떻게 시작하나요", "What's the capital of Australia?", "씨발 환경 따위"]:
        r = http.post(PATH + "/free-text", json={"message": msg})
        assert r.status_code == 200
        assert r.json()["data"] == {"recommend": OFF_TOPIC, "challenges": None}, msg


def test_free_text_json_in_three_languages(http, eco):
    for msg, cat in [("환경을 위해 분리수거를 잘하고 싶어요", "ZERO_WASTE"),
                     ("How can our office save energy?", "ENERGY_SAVING"),
                     ("我想尝试吃素", "VEGAN")]:
        r = http.post(PATH + "/free-text", json={"message": msg})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["message"] == "사용자 자유 메시지를 기반으로 챌린지를 추천합니다."
        check_answer(body["data"], eco, cat)


def sse(http, endpoint, **params):
    url = PATH + endpoint + "?" + urllib.parse.urlencode(params)
    with connect_sse(http, "GET", url) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["x-accel-buffering"] == "no"
        return [(e.event, json.loads(e.data)) for e in source.iter_sse()]


def test_free_text_stream_sends_clean_text_then_one_close(http, eco):
    # Sent percent-encoded twice, as the front end sometimes does.
    twice = urllib.parse.quote("집에서 전기를 아끼고 싶어요")
    url = PATH + "/free-text?" + urllib.parse.urlencode({"sessionId": "py-sse", "message": twice})
    with connect_sse(http, "GET", url) as source:
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    kinds = [k for k, _ in events]
    assert kinds[-1] == "close" and kinds.count("close") == 1
    assert set(kinds[:-1]) == {"challenge"}
    for _, d in events[:-1]:
        assert (d["status"], d["message"]) == (200, "토큰 생성")
    text = "".join(d["data"] for _, d in events[:-1])
    close = events[-1][1]
    assert (close["status"], close["message"]) == (200, "모든 챌린지 추천 완료")
    data = close["data"]
    check_answer(data, eco, "ENERGY_SAVING")
    assert "{" not in text and '"' not in text and "\\n" not in text and "\\u" not in text
    assert text.startswith(data["recommend"])
    for n, c in enumerate(data["challenges"], 1):
        assert f"{n}. {c['title']}\n{c['description']}" in text


def test_stream_errors_are_events_or_plain_400s(http):
    events = sse(http, "/free-text", message="짧음")
    assert events == [("error", {"status": 422, "message": "message는 문자열이어야 하며, 최소 5자 이상의 문자열이어야 합니다.", "data": None})]
    events = sse(http, "/free-text", message="재미있는 영화 추천해줘")
    assert events == [("error", {"status": 200, "message": OFF_TOPIC, "data": None})]
    r = http.get(PATH + "/base-info", params={"location": "도시", "workType": "사무직"})
    assert (r.status_code, r.json()["message"]) == (400, "['category']은 필수입니다.")


def test_session_restores_the_base_info_category(http, eco):
    sid = "py-session-restore"
    r = http.post(PATH + "/base-info", json={"sessionId": sid, "location": "산", "workType": "현장직", "category": "플로깅"})
    assert r.status_code == 200
    r = http.post(PATH + "/free-text", json={"sessionId": sid, "message": "비건 챌린지도 추천해줘"})
    check_answer(r.json()["data"], eco, "VEGAN")
    r = http.post(PATH + "/free-text", json={"sessionId": sid, "message": "원래 카테고리로 다시 추천해줘"})
    check_answer(r.json()["data"], eco, "PLOGGING")


def metric(http, name):
    text = http.get(BASE + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def test_a_disconnected_stream_cancels_its_generation(http):
    before = metric(http, "sprout_sequences_cancelled_total")
    url = PATH + "/free-text?" + urllib.parse.urlencode({"message": "사무실에서 종이를 덜 쓰는 방법을 자세히 알려주세요"})
    with connect_sse(http, "GET", url) as source:
        first = next(iter(source.iter_sse()))
        assert first.event == "challenge"
    # The client is gone after one fragment: the generation stops at the next step.
    deadline = time.monotonic() + 30
    while metric(http, "sprout_sequences_cancelled_total") <= before:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.05)


def test_token_counts_come_as_a_header_and_an_opt_in_event(http, eco):
    r = http.post(PATH + "/free-text", json={"message": "플라스틱 쓰레기를 줄이고 싶어요"})
    assert r.status_code == 200
    usage = json.loads(r.headers["x-sprout-usage"])
    assert set(usage) == {"prompt_tokens", "completion_tokens", "cached_tokens", "forced_tokens"}
    # The prompt holds the system part and six candidate titles; the answer a sentence and
    # three titles, most of them copied by jump-forward.
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 10
    assert 0 < usage["forced_tokens"] <= usage["completion_tokens"]
    assert usage["cached_tokens"] <= usage["prompt_tokens"]
    # The off-topic answer runs no model: no counts.
    r = http.post(PATH + "/free-text", json={"message": "재미있는 영화 추천해줘"})
    assert "x-sprout-usage" not in r.headers
    # Streaming: only when asked, one usage event just before close.
    plain = sse(http, "/free-text", message="전기를 아끼는 방법을 알려주세요")
    assert "usage" not in [k for k, _ in plain]
    asked = sse(http, "/free-text", message="전기를 아끼는 방법을 알려주세요", usage="1")
    kinds = [k for k, _ in asked]
    assert kinds[-2:] == ["usage", "close"] and kinds.count("usage") == 1
    counts = asked[-2][1]
    assert counts["prompt_tokens"] > 50 and counts["forced_tokens"] > 0
    # The same prompt a second time: its prefix comes from the cache.
    assert counts["cached_tokens"] > 0
    check_answer(asked[-1][1]["data"], eco)
