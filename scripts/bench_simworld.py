"""The simulator for ``scripts/bench resume``: a world that can be saved and served again.

    python scripts/bench_simworld.py --scenario FILE --port-file FILE [--port N] [--world FILE]

Serves the simulator's HTTP front (``orchestrator.simulator.app``) like ``ims-migrate
simulator``, plus ``POST /_bench/save?path=FILE``: the world as it is now (images, jobs,
counters) pickled to FILE, with the simulator's clock. Started with ``--world FILE``, it serves
that saved world instead of the scenario's, its clock going on from the moment it was saved
(a copy job that had 1 s to go has 1 s to go). So each measured resume of one stopped state
meets the same cloud, never one that an earlier resume changed (copies made, jobs polled).

A benchmark's helper, not part of the product: not in CI.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from orchestrator.simulator.app import SERVICE, build_app, serve, write_port_file
from orchestrator.simulator.scenario import build_world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_simworld")
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--world", type=Path, default=None, help="a world saved by /_bench/save")
    args = parser.parse_args(argv)
    anyio.run(_serve, args, backend_options={"use_uvloop": True})
    return 0


async def _serve(args: argparse.Namespace) -> None:
    if args.world is not None:
        saved: dict[str, Any] = pickle.loads(args.world.read_bytes())  # noqa: S301 -- our own
        world, faults = saved["world"], saved["faults"]
        shift = time.time() - saved["now"]  # the clock goes on from the save
        # The requests' X-Sdk-Date is the machine's clock: shifted as far as the world's.
        world.params = replace(world.params, max_skew=world.params.max_skew + shift)
    else:
        world, faults = build_world(json.loads(args.scenario.read_text(encoding="utf-8")))
        shift = 0.0

    def now() -> float:
        return time.time() - shift

    app = build_app(world, faults, now=now)

    @web.middleware
    async def save(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/_bench/save":  # build_app's routes end in a catch-all: before it
            response: web.StreamResponse = await handler(request)
            return response
        service = request.app[SERVICE]
        path = Path(request.query["path"])
        data = {"world": service.world, "faults": service.faults, "now": service.now()}
        # At once, in the loop's thread: the world does not change while it is pickled.
        path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: ASYNC240
        return web.json_response({"saved": str(path), "now": data["now"]})

    app.middlewares.append(save)
    runner, port = await serve(app, "127.0.0.1", args.port)
    try:
        write_port_file(args.port_file, port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
