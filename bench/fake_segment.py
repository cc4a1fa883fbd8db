"""A fast fake Segment for benchmarks: answers 200 to /v1/batch and counts what arrives.

Unlike tests/fake_segment.py it keeps no messages, only messageIds (to count distinct ones)
and, for ids it is asked to watch, the arrival time (for latency).
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web


class CountingSegment:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.messages = 0
        self.requests = 0
        self.arrivals: dict[str, float] = {}
        self.watch = False
        self.first_at: float | None = None  # when the first batch arrived
        self.last_at: float | None = None  # when the last new messageId arrived

    async def batch(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        batch = json.loads(body)["batch"]
        self.requests += 1
        self.messages += len(batch)
        if self.first_at is None:
            self.first_at = now
        before = len(self.ids)
        for message in batch:
            message_id = message["messageId"]
            self.ids.add(message_id)
            if self.watch:
                self.arrivals.setdefault(message_id, now)
        if len(self.ids) > before:
            self.last_at = time.time()
        return web.json_response({"success": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"distinct": len(self.ids), "messages": self.messages, "requests": self.requests,
             "first_at": self.first_at, "last_at": self.last_at}
        )

    async def arrivals_view(self, request: web.Request) -> web.Response:
        return web.json_response(self.arrivals)

    async def reset(self, request: web.Request) -> web.Response:
        self.ids.clear()
        self.arrivals.clear()
        self.first_at = self.last_at = None
        self.messages = self.requests = 0
        self.watch = request.query.get("watch") == "1"
        return web.json_response({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    fake = CountingSegment()
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/batch", fake.batch)
    app.router.add_get("/stats", fake.stats)
    app.router.add_get("/arrivals", fake.arrivals_view)
    app.router.add_post("/reset", fake.reset)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
