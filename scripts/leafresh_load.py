"""Load test of the Leafresh free-text endpoint like the seed team's `hey -n 1000 -c 50`, but with
50 different messages (ko/en/zh, cycled) and every body checked: status 200, the contract's
envelope, three distinct challenges that exist in the eco catalog (or the off-topic answer).

  python scripts/leafresh_load.py --url http://127.0.0.1:9000 -n 1000 -c 50

Needs httpx (the test venv has it). Prints req/s, latency percentiles and the failures.
"""
import argparse
import asyncio
import json
import statistics
import time

import httpx

MESSAGES = [
    "환경을 위해 분리수거를 잘하고 싶어요", "일회용 컵을 덜 쓰는 방법을 알려주세요", "장 볼 때 비닐봉지를 안 받고 싶어요",
    "배달 음식 포장 쓰레기가 너무 많아요", "조깅하면서 쓰레기 줍는 활동을 하고 싶어요", "주말에 바닷가에서 쓰레기를 줍고 싶어요",
    "등산하면서 산을 깨끗하게 하고 싶어요", "출퇴근할 때 탄소 배출을 줄이고 싶어요", "자동차 대신 자전거를 타면 도움이 될까요",
    "대중교통을 더 자주 이용하고 싶어요", "집에서 전기를 아끼고 싶어요", "여름에 에어컨 전기요금이 걱정돼요",
    "사무실에서 쓰지 않는 전등을 끄는 습관", "대기전력을 줄이려면 어떻게 해야 하나요", "헌 옷으로 새로운 물건을 만들고 싶어요",
    "버려지는 유리병을 재활용해서 만들기", "환경 다큐멘터리를 친구들과 보고 싶어요", "SNS에 환경 캠페인을 알리고 싶어요",
    "이메일함을 정리하면 탄소가 줄어드나요", "스트리밍 화질을 낮추면 환경에 좋을까요", "고기를 덜 먹는 식단을 시작하고 싶어요",
    "일주일에 하루는 채식을 해보고 싶어요", "비건 도시락 만들기에 도전하고 싶어요", "플라스틱 빨대 대신 쓸 수 있는 게 있을까요",
    "러닝 크루랑 같이 할 만한 친환경 활동", "I want to stop using plastic bags when I shop",
    "How can I produce less packaging waste at home?", "I'd like to pick up litter while jogging",
    "How do I cut the carbon footprint of my commute?", "Tips to lower my electricity bill at home",
    "How can our office save energy?", "What can I make from old jeans?", "Ideas to reuse glass jars creatively",
    "How do I run a green campaign on social media?", "Does deleting old emails really reduce emissions?",
    "I want to try eating plant-based meals", "我想减少使用一次性塑料", "买菜时怎样避免塑料袋", "跑步的时候顺便捡垃圾",
    "周末去海边捡垃圾", "怎样减少上下班的碳排放", "在家怎么节约用电", "办公室如何节能", "旧衣服可以改造成什么",
    "想在社交媒体上宣传环保", "删除旧邮件能减少碳排放吗", "我想尝试吃素", "推荐一些纯素食谱",
    "오늘 저녁 메뉴 추천해줘", "주식 투자 어떻게 시작하나요",
]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:9000")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-c", type=int, default=50)
    ap.add_argument("--key", default="")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=args.c)) as http:
        r = await http.get(args.url + "/v1/catalogs/eco/items", params={"limit": 1000}, headers=headers)
        titles = {i["title"] for i in r.json()["items"]}
        latencies, failures, off_topic = [], [], 0
        next_i = 0

        async def worker():
            nonlocal next_i, off_topic
            while next_i < args.n:
                i = next_i
                next_i += 1
                msg = MESSAGES[i % len(MESSAGES)]
                t = time.monotonic()
                try:
                    r = await http.post(args.url + "/ai/chatbot/recommendation/free-text", json={"message": msg})
                    body = r.json()
                except Exception as e:  # a timeout or a broken connection is a failure
                    failures.append((msg, repr(e)))
                    continue
                latencies.append(time.monotonic() - t)
                data = body.get("data") or {}
                ch = data.get("challenges")
                if r.status_code != 200 or body.get("status") != 200:
                    failures.append((msg, f"status {r.status_code}: {body}"))
                elif ch is None:
                    off_topic += 1
                elif len(ch) != 3 or len({c["title"] for c in ch}) != 3 or any(c["title"] not in titles for c in ch):
                    failures.append((msg, json.dumps(data, ensure_ascii=False)))

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.c)))
        total = time.monotonic() - t0
    lat = sorted(latencies)
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
    print(f"{args.n} requests, {args.c} at a time, {len(MESSAGES)} messages: {total:.1f} s, "
          f"{args.n / total:.2f} req/s; latency p50 {pct(0.5):.2f} s, p90 {pct(0.9):.2f} s, "
          f"p99 {pct(0.99):.2f} s, max {lat[-1] if lat else float('nan'):.2f} s, mean {statistics.mean(lat):.2f} s; "
          f"off-topic answers {off_topic}; failures {len(failures)}")
    for f in failures[:10]:
        print("  FAIL", f)


asyncio.run(main())
