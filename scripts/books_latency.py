#!/usr/bin/env python3
"""One book recommendation at one client, streamed: when the first delta arrives, when the first
text the model chose arrives (after the grammar's fixed "1. **[" prefix), and when `done` arrives.

  python3 scripts/books_latency.py --url http://127.0.0.1:9000 [--runs 3] [--user-dir DIR]

With --user-dir (the test case's user_reading_history.json and user_reading_preferences.json), the
user is uploaded first and every request names it. Needs httpx and httpx-sse (the test venv).
"""
import argparse
import json
import statistics
import time

import httpx
from httpx_sse import connect_sse

CASES = {
    "TC1": {"user_emotion": "불안함", "desired_emotional_effect": "위로와 안정감", "occupation": "직장인",
            "reading_context": "잠들기 전 독서", "focus_level": "가볍게 읽을 수 있는 책"},
    "TC2": {"user_emotion": "우울함", "desired_emotional_effect": "위로와 안정감", "occupation": "학생",
            "reading_context": "이동 중 짧은 시간", "focus_level": "빠르게 몰입할 수 있는 책"},
}
FIXED_PREFIX = "1. **["


def one(http, url, body):
    t0 = time.monotonic()
    first_delta = first_chosen = done = None
    text = ""
    with connect_sse(http, "POST", url + "/api/recommend-books", json=body,
                     headers={"accept": "text/event-stream"}) as source:
        for event in source.iter_sse():
            now = time.monotonic() - t0
            if event.event == "delta":
                first_delta = first_delta if first_delta is not None else now
                text += json.loads(event.data)["text"]
                if first_chosen is None and len(text) > len(FIXED_PREFIX):
                    first_chosen = now
            elif event.event == "done":
                done = now
                books = [b["title"] for b in json.loads(event.data)["books"]]
            elif event.event == "error":
                raise SystemExit(f"error event: {event.data}")
    if done is None:
        raise SystemExit("the stream ended without done")
    return first_delta, first_chosen, done, books


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:9000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--user-dir")
    args = ap.parse_args()
    with httpx.Client(timeout=300) as http:
        user = None
        if args.user_dir:
            user = "latency-user"
            for what, name in [("history", "user_reading_history.json"),
                               ("preferences", "user_reading_preferences.json")]:
                with open(f"{args.user_dir}/{name}", encoding="utf-8") as f:
                    r = http.put(f"{args.url}/api/users/{user}/{what}", json=json.load(f))
                    r.raise_for_status()
        print("| case | method | first delta (s) | first chosen text (s) | done (s) | books |")
        print("|---|---|---|---|---|---|")
        # The first run of each is cold (nothing of its prompt cached); the median is over all.
        for name, answers in CASES.items():
            for method in (1, 2):
                body = dict(answers, method=method)
                if user:
                    body["userId"] = user
                runs = [one(http, args.url, body) for _ in range(args.runs)]
                med = lambda i: statistics.median(r[i] for r in runs)
                cell = lambda i: f"{runs[0][i]:.2f} cold, {med(i):.2f} median"
                print(f"| {name} | {method} | {cell(0)} | {cell(1)} | {cell(2)} | "
                      f"{' / '.join(runs[0][3])} |")


if __name__ == "__main__":
    main()
