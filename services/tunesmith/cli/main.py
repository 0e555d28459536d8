"""The `tunesmith` command. Heavy libraries are imported only by the subcommands that need them."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from tunesmith.core.server import DEFAULT_PORTS, SERVICE_NAMES


def cmd_serve(args) -> int:
    from tunesmith.cli.servers import start_service
    from tunesmith.core import logs
    from tunesmith.core.runtime import Runtime
    from tunesmith.core.server import serve_forever

    unused = _refuse_unused_load_options(args, args.service)
    if unused:
        print(f"error: {unused}", file=sys.stderr)
        return 2
    logs.configure(args.service)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runtime = Runtime.create(args.storage)
    # Staging left by writers killed mid-write (never visible as artifacts); 6 h spares live ones.
    runtime.storage.clean_staging(older_than_seconds=6 * 3600)
    http_port = None if args.service != "inference" or args.no_http else args.http_port
    if args.service == "inference" and args.max_queue > 0:
        os.environ["TUNESMITH_INFERENCE_MAX_QUEUE"] = str(args.max_queue)
    running = start_service(args.service, runtime, port=args.port, host=args.host, grace=args.grace,
                            http_port=http_port)
    print(f"{args.service} listening on {args.host}:{running.port}", file=sys.stderr, flush=True)
    if running.http_port is not None:
        print(f"{args.service} OpenAI-compatible HTTP API on port {running.http_port} (/v1)", file=sys.stderr,
              flush=True)
    if args.service == "inference" and args.load:
        try:
            load_at_start(running.servicer, args.load, backend=args.load_backend, enable_adapters=args.enable_adapters)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            running.stop(0)
            return 2
    serve_forever(running)
    return 0


def _refuse_unused_load_options(args, service: str = "inference") -> str:
    """The error for --load options that would be ignored ("" when they are all used)."""
    if args.load and service != "inference":
        return "--load serves models, so it is for the inference service only"
    if (args.load_backend or args.enable_adapters) and not args.load:
        return "--load-backend and --enable-adapters apply to --load models; add --load NAME=MODEL"
    return ""


def load_at_start(servicer, specs: list[str], *, backend: str = "", enable_adapters: bool = False) -> None:
    """Start loading each NAME=MODEL of `specs` (LoadModel returns at once; GET /ready/NAME on
    the HTTP API says when it is READY). ValueError naming the spec for a bad one."""
    from tunesmith.api.inference.v1 import inference_pb2
    from tunesmith.core.errors import TunesmithError

    for spec in specs:
        name, sep, model = spec.partition("=")
        if not sep or not name or not model:
            raise ValueError(f"--load {spec!r}: expected NAME=MODEL (a model-store name or a model artifact URI)")
        try:
            servicer.LoadModel(inference_pb2.LoadModelRequest(name=name, model=model, backend=backend,
                                                              enable_adapters=enable_adapters), None)
        except TunesmithError as exc:
            raise ValueError(f"--load {spec!r}: {exc.field + ': ' if exc.field else ''}{exc.message}") from None
        print(f"inference loading {model} as {name!r} (GET /ready/{name} says when it is READY)", file=sys.stderr,
              flush=True)


def cmd_up(args) -> int:
    from tunesmith.cli.servers import LocalCluster

    unused = _refuse_unused_load_options(args)
    if unused:
        print(f"error: {unused}", file=sys.stderr)
        return 2
    ports = {s: args.base_port + i for i, s in enumerate(SERVICE_NAMES)} if args.base_port else None
    cluster = LocalCluster(ports=ports, storage=args.storage, load=args.load, load_backend=args.load_backend,
                           enable_adapters=args.enable_adapters).start()
    for service, address in cluster.addresses.items():
        print(f"{service:<10} {address}   ({SERVICE_NAMES[service]})", flush=True)
    print(f"{'http':<10} http://localhost:{cluster.http_port}/v1   (OpenAI-compatible API of the inference service)",
          flush=True)
    print("all four services are SERVING; Ctrl-C stops them", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            dead = [s for s, p in cluster.procs.items() if p.poll() is not None]
            if dead:
                print(f"service(s) exited: {', '.join(dead)}; stopping", file=sys.stderr)
                return 1
    finally:
        cluster.stop()
    return 0


def cmd_status(args) -> int:
    """Each service's GetStatus through the SDK, as JSON; an unreachable one says so."""
    from dataclasses import asdict

    from tunesmith.client import Tunesmith, TunesmithClientError

    out = {}
    ports = {s: args.base_port + i for i, s in enumerate(SERVICE_NAMES)} if args.base_port else DEFAULT_PORTS
    with Tunesmith(**{s: f"{args.host}:{p}" for s, p in ports.items()}, retries=0) as ts:
        for service, client in ts.clients.items():
            if args.service and service != args.service:
                continue
            try:
                out[service] = asdict(client.status(timeout=10))
            except TunesmithClientError as exc:
                out[service] = {"error": str(exc)}
    print(json.dumps(out, indent=2))
    return 0 if all("error" not in v for v in out.values()) else 1


def cmd_models(args) -> int:
    from tunesmith.core.runtime import Runtime

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rt = Runtime.create(args.storage)
    if args.action == "import-bundled":
        entry = rt.models.ensure_bundled()
        print(f"{entry.name}: {rt.models.local_path(entry.name)}")
    elif args.action == "register":
        entry = rt.models.register(args.name, args.path)
        print(f"{entry.name}: {entry.artifact.uri}")
    else:
        for entry in rt.models.list():
            print(f"{entry.name:<28} {entry.architecture:<24} {entry.parameters:>12,}  {entry.source}")
    return 0


def _intent_count(text: str) -> int:
    import argparse

    if text == "all":
        return 77
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--intents takes a number from 1 to 77 or 'all', got {text!r}") from None
    if not 1 <= n <= 77:
        raise argparse.ArgumentTypeError(f"--intents takes a number from 1 to 77 or 'all', got {n}")
    return n


def cmd_demo(args) -> int:
    from tunesmith.cli.demo import run_demo

    return run_demo(args)


def _load_arguments(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("--load", action="append", default=[], metavar="NAME=MODEL",
                        help=prefix + "serve MODEL (model-store name or artifact URI) as NAME from the start; "
                                      "repeatable")
    parser.add_argument("--load-backend", default="", choices=["", "vllm", "transformers"],
                        help=prefix + "backend for --load (default: the best available)")
    parser.add_argument("--enable-adapters", action="store_true",
                        help=prefix + "load --load models with adapters enabled (LoadAdapter on top)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune, evaluate and serve LLMs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run one service (the way Kubernetes runs it)")
    s.add_argument("service", choices=list(SERVICE_NAMES))
    s.add_argument("--port", type=int, default=None, help="default: the service's standard port")
    s.add_argument("--host", default="[::]")
    s.add_argument("--storage", default=None, help="storage root (default $TUNESMITH_HOME or ~/.tunesmith)")
    s.add_argument("--grace", type=float, default=10.0, help="seconds to finish in-flight calls on SIGTERM")
    s.add_argument("--http-port", type=int, default=8000,
                   help="inference only: port of the OpenAI-compatible HTTP API (default 8000)")
    s.add_argument("--no-http", action="store_true", help="inference only: no HTTP API")
    s.add_argument("--max-queue", type=int, default=0,
                   help="inference only: generation requests in flight before RESOURCE_EXHAUSTED / HTTP 429 "
                        "(default 64, or $TUNESMITH_INFERENCE_MAX_QUEUE)")
    _load_arguments(s, "inference only: ")
    s.set_defaults(func=cmd_serve)

    u = sub.add_parser("up", help="run all four services on localhost")
    u.add_argument("--storage", default=None)
    u.add_argument("--base-port", type=int, default=0, help="ports base..base+3 (default 50051-50054)")
    _load_arguments(u, "")
    u.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="show each service's status and plugins")
    st.add_argument("service", nargs="?", choices=list(SERVICE_NAMES))
    st.add_argument("--host", default="localhost")
    st.add_argument("--base-port", type=int, default=0, help="services on base..base+3 (default 50051-50054)")
    st.set_defaults(func=cmd_status)

    m = sub.add_parser("models", help="the model store")
    m.add_argument("action", choices=["list", "import-bundled", "register"], nargs="?", default="list")
    m.add_argument("--name")
    m.add_argument("--path")
    m.add_argument("--storage", default=None)
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("demo", help="fine-tune the bundled model on BANKING77 routing, end to end")
    d.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    d.add_argument("--storage", default=None)
    d.add_argument("--intents", type=_intent_count, default=10,
                   help="how many BANKING77 intents (1-77), or 'all' (default 10)")
    d.add_argument("--train-rows", type=int, default=500)
    d.add_argument("--eval-rows", type=int, default=200, help="held-out test rows (0: the whole test split)")
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    d.add_argument("--packing", action="store_true", help="pack rows into full sequences while training")
    d.add_argument("--no-serve", action="store_true", help="skip serving the tuned model")
    d.add_argument("--base-model", default="smollm2-135m-instruct", help="model-store name of the base model")
    d.add_argument("--base-port", type=int, default=0, help="start services on base..base+3 (default 50051-50054)")
    d.set_defaults(func=cmd_demo)
    __import__("tunesmith.cli.synth", fromlist=["add_parser"]).add_parser(sub)  # `tunesmith synth`
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "port", "unset") is None:
        args.port = DEFAULT_PORTS[args.service]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
