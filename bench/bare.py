"""The framework's limit: an aiohttp app that parses the same JSON and answers 200, storing
nothing."""

from __future__ import annotations

import argparse
import json

from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    document = json.loads(await request.read())
    count = len(document) if isinstance(document, list) else 1
    return web.json_response({"accepted": count, "duplicates": 0, "rejected": []})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/webhooks/nudgespot/{token}", webhook)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
