"""The command line: serve, check, demo, keys new, spend, init. It wires parts together and
holds no routing or HTTP logic of its own."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from asgi_router import __version__, logs
from asgi_router.errors import ConfigErrors
from asgi_router.graph import Graph

DEFAULT_CONFIG = "router.toml"


def _load(path: Path, failure: str) -> Graph | None:
    """The compiled graph, or None after printing every error under ``failure``."""
    from asgi_router import config

    try:
        return config.load(path)
    except ConfigErrors as e:
        print(f"{path}: {failure} ({len(e.errors)} error(s))", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
    except OSError as e:
        print(f"{path}: {e.strerror or e}", file=sys.stderr)
    return None


def cmd_check(args: argparse.Namespace) -> int:
    from asgi_router.config.describe import describe

    graph = _load(Path(args.config), "the config has errors")
    if graph is None:
        return 1
    print(describe(graph))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from asgi_router.serve import serve

    path = Path(args.config)
    graph = _load(path, "the config has errors; nothing started")
    if graph is None:
        return 1
    os.environ["ASGI_ROUTER_LOG_LEVEL"] = args.log_level
    os.environ["ASGI_ROUTER_LOG_FORMAT"] = args.log_format
    return serve(path, graph, workers=args.workers, drain_s=args.drain_seconds)


def cmd_demo(args: argparse.Namespace) -> int:
    from asgi_router.demo import run_demo

    return run_demo(port=args.port, smoke=args.smoke)


def cmd_keys_new(args: argparse.Namespace) -> int:
    from asgi_router.config.writer import append_key

    try:
        key = append_key(Path(args.config), args.name)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return 1
    print(f"added [keys.{args.name}] to {args.config} (only its sha256 is stored)")
    print(f"the key, shown once: {key}")
    return 0


_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str | None) -> float | None:
    if not text:
        return None
    m = _SINCE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--since takes a duration like 30m, 24h or 7d, not {text!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def cmd_spend(args: argparse.Namespace) -> int:
    from asgi_router.config import spend_log_path
    from asgi_router.spendlog import report

    try:
        path = spend_log_path(Path(args.config))  # no secrets needed to read a report
    except ConfigErrors as e:
        print("\n".join(str(err) for err in e.errors), file=sys.stderr)
        return 1
    if path is None or not path.exists():
        print(
            "no spend log yet: set [state] spend_log in router.toml and serve some requests", file=sys.stderr
        )
        return 1
    rows = report(path, args.by, args.since)
    print(
        f"{args.by:<28} {'requests':>9} {'input tok':>11} {'output tok':>11} {'usd':>12} {'race waste':>11}"
    )
    for name, n, tin, tout, usd, waste in rows:
        print(
            f"{name or '-':<28} {n:>9} {tin or 0:>11} {tout or 0:>11} {usd or 0:>12.6f} {waste or 0:>11.6f}"
        )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from asgi_router.config.writer import init_toml

    text = init_toml(os.environ)
    if args.config == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.config)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to replace it, or --config - to print", file=sys.stderr)
        return 1
    path.write_text(text)
    print(f"wrote {path}; check it with: asgi-router check {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asgi-router", description="A small, fast, correct LLM gateway.")
    p.add_argument("--version", action="version", version=f"asgi-router {__version__}")
    p.add_argument("--log-level", default=os.environ.get("ASGI_ROUTER_LOG_LEVEL", "info"))
    p.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=os.environ.get("ASGI_ROUTER_LOG_FORMAT"),
        help="json (the default) or console (the default for demo)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway on hypercorn")
    s.add_argument("--config", default=DEFAULT_CONFIG)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="after SIGTERM, answer /readyz 503 this long before closing the listener",
    )
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check", help="validate router.toml and print the compiled graph")
    c.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    c.set_defaults(func=cmd_check)

    d = sub.add_parser("demo", help="simulated providers + the gateway on a demo config; no API keys needed")
    d.add_argument("--port", type=int, default=4000)
    d.add_argument(
        "--smoke", action="store_true", help="send a few requests through, print what happened, exit"
    )
    d.set_defaults(func=cmd_demo)

    k = sub.add_parser("keys", help="client keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kn = ksub.add_parser("new", help="make a key, print it once, append its hash to router.toml")
    kn.add_argument("name")
    kn.add_argument("--config", default=DEFAULT_CONFIG)
    kn.set_defaults(func=cmd_keys_new)

    sp = sub.add_parser("spend", help="spend from the spend log")
    sp.add_argument("--by", choices=("key", "route", "provider", "model"), default="key")
    sp.add_argument("--since", type=parse_since, default=None, help="e.g. 30m, 24h, 7d")
    sp.add_argument("--config", default=DEFAULT_CONFIG)
    sp.set_defaults(func=cmd_spend)

    i = sub.add_parser("init", help="write a starter router.toml from the provider keys in the environment")
    i.add_argument("--config", default=DEFAULT_CONFIG, help="where to write it; - prints it")
    i.add_argument("--force", action="store_true")
    i.set_defaults(func=cmd_init)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.log_format is None:
        args.log_format = "console" if args.command == "demo" else "json"
    logs.configure(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except argparse.ArgumentTypeError as e:
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
