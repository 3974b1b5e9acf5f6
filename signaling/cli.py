"""``parley``: serve a node, mint join tokens."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import secrets
import signal
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from conference.permissions import BOOLEAN_GRANTS, Role
from signaling import __version__
from signaling.app import create_app
from signaling.appkeys import NODE
from signaling.auth import mint_token
from signaling.config import ConfigError, NodeConfig, load_config, parse_keys
from signaling.listener import serve
from signaling.logs import setup_logging
from signaling.memory import limit_arenas

log = logging.getLogger("parley")

DEMO_ROOM = "demo"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one node")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--config", "-c", help="YAML config file")
    serve.add_argument("--keys", help="API keys as key:secret[,key:secret]")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])
    serve.add_argument("--public-url", help="base URL printed in join links")
    serve.add_argument("--redis-url",
                       help="join a cluster through this Redis (redis://[:password@]host:port/db)")
    serve.add_argument("--workers", type=int, default=1,
                       help="node processes sharing the port, one per core (default 1; more "
                            "than 1 needs --redis-url)")

    token = sub.add_parser("token", help="mint a join token and print it")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument("--name")
    token.add_argument("--role", choices=[r.value for r in Role])
    token.add_argument("--grant", action="append", default=[], metavar="NAME=true|false",
                       help=f"explicit grant, repeatable: {', '.join(BOOLEAN_GRANTS)}")
    token.add_argument("--metadata")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (default 3600)")
    token.add_argument("--config", "-c", help="YAML config file to read keys from")
    token.add_argument("--keys", help="key:secret pairs; the first is used unless --key")
    token.add_argument("--key", help="which API key to sign with")
    load = sub.add_parser("loadtest", help="synthetic publishers and subscribers against a node")
    load.add_argument("--url", default="http://127.0.0.1:8080")
    load.add_argument("--keys", required=True, help="key:secret of the node")
    load.add_argument("--rooms", type=int, default=1)
    load.add_argument("--publishers", type=int, default=1, help="per room")
    load.add_argument("--subscribers", type=int, default=2, help="per room")
    load.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    load.add_argument("--bitrate", type=int, default=1_000_000, help="video clip bitrate")
    load.add_argument("--no-audio", action="store_true")
    load.add_argument("--room-prefix", default="load")
    load.add_argument("--light", action="store_true",
                      help="subscribers count RTP headers only, in worker processes")
    load.add_argument("--processes", type=int, default=1,
                      help="with --light: worker processes for the subscribers")
    sub.add_parser("schema", help="print the JSON Schema of every client message")
    return parser


def _schema() -> int:
    import signaling.connection  # noqa: F401  (imports every message's declaration)
    from signaling.protocol import MESSAGES

    print(json.dumps(MESSAGES.json_schema(), indent=2, sort_keys=True))
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    # The client package is a load generator, not part of the node: only this command loads it.
    from client.loadtest import LoadSpec, run_load

    key, secret = next(iter(parse_keys(args.keys).items()))

    def mint(*, room: str, identity: str, role: str, ttl: float) -> str:
        return mint_token(key=key, secret=secret, room=room, identity=identity, role=role,
                          ttl=ttl)

    spec = LoadSpec(url=args.url, rooms=args.rooms,
                    publishers=args.publishers, subscribers=args.subscribers,
                    duration=args.duration, audio=not args.no_audio, bitrate=args.bitrate,
                    room_prefix=args.room_prefix, light=args.light,
                    processes=args.processes)
    result = asyncio.run(run_load(spec, mint))
    print(json.dumps(result, indent=2))
    return 0


def _serve_config(args: argparse.Namespace) -> NodeConfig:
    flags: dict[str, Any] = {}
    for name in ("host", "port", "log_level", "log_format", "public_url"):
        value = getattr(args, name)
        if value is not None:
            flags[name] = value
    if args.keys:
        flags["auth"] = {"keys": args.keys}
    if args.redis_url is not None:
        flags["redis"] = {"url": args.redis_url}
    config = load_config(path=args.config, overrides=flags)
    if args.workers < 1:
        raise ConfigError("--workers: at least 1")
    if args.workers > 1 and not config.redis.enabled:
        raise ConfigError(
            f"--workers {args.workers} runs {args.workers} nodes, which must share their rooms "
            "through Redis: set --redis-url (or PARLEY_REDIS_URL, redis.url)")
    if args.workers > 1 and config.port == 0:
        raise ConfigError("--workers: the workers share one port; choose it (--port)")
    config = replace(config, development=False)
    if not config.auth.keys:
        dev_key = {"dev": secrets.token_urlsafe(24)}
        config = replace(config, development=True, auth=replace(config.auth, keys=dev_key))
    return config


def _join_link(config: NodeConfig, base_url: str) -> str:
    key, secret = next(iter(config.auth.keys.items()))
    token = mint_token(key=key, secret=secret, room=DEMO_ROOM, identity="guest",
                       name="Guest", role=Role.MODERATOR, ttl=24 * 3600)
    return f"{base_url}/?token={quote(token)}"


def _freeze_startup_objects() -> None:
    """What exists once the node listens (modules, the app and its routes: some 100,000
    objects) lives as long as the process; moved out of the garbage collector's way, a
    full collection walks only what meetings created, and pauses the loop that much
    less (gc.freeze, as long-running CPython servers do)."""
    gc.collect()
    gc.freeze()


async def _serve(config: NodeConfig, *, worker: int | None = None) -> None:
    limit_arenas(config.malloc_arena_max)
    app = create_app(config)
    serving = await serve(app, config, app[NODE].metrics, reuse_port=worker is not None)
    _freeze_startup_objects()
    port = serving.port
    base = config.public_url.rstrip("/") or replace(config, port=port).base_url
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("parley listening", extra={"url": base, "node": app[NODE].id})
    if config.development:
        key, secret = next(iter(config.auth.keys.items()))
        print(
            "\n*** DEVELOPMENT MODE: no API keys configured; generated a throw-away key. ***\n"
            "*** Do not expose this node. Set PARLEY_KEYS=key:secret for production.   ***\n"
            f"    mint tokens with: PARLEY_KEYS={key}:{secret} parley token --room {DEMO_ROOM} "
            "--identity alice --role speaker\n",
            file=sys.stderr, flush=True)
    tag = "" if worker is None else f" (worker {worker}, node {app[NODE].id})"
    print(f"Parley {__version__} listening on {base}{tag}", flush=True)
    if config.development and not worker:  # a production node never prints a token
        print(f"Join the demo room: {_join_link(config, base)}", flush=True)
    await stop.wait()
    log.info("shutting down")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    # Drain while still listening, so /readyz answers 503 during the grace period.
    await app[NODE].drain(config.shutdown_grace)
    await serving.stop()


def _token(args: argparse.Namespace) -> int:
    if args.keys:
        keys = parse_keys(args.keys)
    else:
        keys = dict(load_config(path=args.config).auth.keys)
    if not keys:
        print("parley token: no keys; pass --keys key:secret or set PARLEY_KEYS",
              file=sys.stderr)
        return 2
    key = args.key or next(iter(keys))
    if key not in keys:
        print(f"parley token: unknown key {key!r}", file=sys.stderr)
        return 2
    grants: dict[str, bool] = {}
    for item in args.grant:
        name, _, value = item.partition("=")
        if name not in BOOLEAN_GRANTS or value.lower() not in ("true", "false", ""):
            print(f"parley token: bad grant {item!r}", file=sys.stderr)
            return 2
        grants[name] = value.lower() != "false"
    print(mint_token(key=key, secret=keys[key], room=args.room, identity=args.identity,
                     name=args.name, role=args.role, grants=grants, ttl=args.ttl,
                     metadata=args.metadata))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "token":
            return _token(args)
        if args.command == "loadtest":
            return _loadtest(args)
        if args.command == "schema":
            return _schema()
        config = _serve_config(args)
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _serve_workers(config, args.workers)
    setup_logging(config.log_level, config.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


def _worker(config: NodeConfig, index: int) -> None:
    """One worker process: a whole node (its own id, rooms and SFU) on the shared port."""
    setup_logging(config.log_level, config.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, worker=index))


def worker_config(config: NodeConfig, index: int) -> NodeConfig:
    """Worker ``index``'s config: with ``sfu.udp_port`` set, each worker's media has its own
    port (``udp_port + index``): one UDP socket demultiplexes one node's connections, and
    the kernel would spread one shared port's datagrams across the workers."""
    if not config.sfu.udp_port:
        return config
    return replace(config, sfu=replace(config.sfu, udp_port=config.sfu.udp_port + index))


def _serve_workers(config: NodeConfig, count: int) -> int:
    """Start ``count`` node processes on one port (SO_REUSEPORT: the kernel spreads
    connections) and one Redis; SIGTERM/SIGINT is passed on to each, which drains.
    Exits non-zero if a worker did."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(worker_config(config, i), i),
                               name=f"parley-worker-{i}")
               for i in range(count)]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in workers:
            proc.start()
        while any(proc.is_alive() for proc in workers):
            for proc in workers:
                proc.join(0.2)
                if not stopping and proc.exitcode not in (None, 0):
                    log.error("a worker exited; stopping the others",
                              extra={"worker": proc.name, "code": proc.exitcode})
                    stop(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if all(proc.exitcode == 0 for proc in workers) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

