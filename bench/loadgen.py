"""Load generator, run as its own process: posts webhook bodies and prints JSON results.

burst: send N requests of B events each over C connections as fast as answers come.
paced: send single events at R per second for T seconds, recording each send time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


def event(run: str, n: int) -> dict:
    return {
        "id": f"{run}-{n}",
        "event": "email_delivered",
        "timestamp": 1795167060 + n % 86400,
        "subscriber": {"uid": f"user-{n % 50000}", "email": f"user{n % 50000}@example.com"},
        "message": {"id": f"msg-{n % 100}", "subject": "Your weekly digest",
                    "campaign_id": "c-1", "campaign_name": "Weekly"},
    }


def bodies(run: str, requests: int, per_body: int) -> list[bytes]:
    """Every request body, built before the clock starts so the generator stays light."""
    out = []
    for i in range(requests):
        events = [event(run, i * per_body + k) for k in range(per_body)]
        out.append(json.dumps(events[0] if per_body == 1 else events).encode())
    return out


async def burst(url: str, run: str, requests: int, per_body: int, connections: int) -> dict:
    prepared = bodies(run, requests, per_body)
    counter = iter(prepared)
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in counter:
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"requests": requests, "events": requests * per_body, "seconds": elapsed,
            "statuses": statuses}


async def paced(url: str, run: str, rate: float, duration_s: float) -> dict:
    sent: dict[str, float] = {}
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=64)
    tasks = []

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        body = event(run, n)
        sent[body["id"]] = time.time()
        async with session.post(url, json=body) as resp:
            await resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        total = int(rate * duration_s)
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, n)))
        await asyncio.gather(*tasks)
    return {"sent": sent, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["burst", "paced"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--run", required=True, help="prefix that makes the event ids unique")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--per-body", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration-s", type=float, default=20)
    args = parser.parse_args()
    if args.mode == "burst":
        result = asyncio.run(burst(args.url, args.run, args.requests, args.per_body,
                                   args.connections))
    else:
        result = asyncio.run(paced(args.url, args.run, args.rate, args.duration_s))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
