"""``headroom-memory``: look into and edit a memory store from the shell.

Examples::

    headroom-memory demo
    headroom-memory --db memory.db add alice "Prefers Go" --category preference
    headroom-memory --db memory.db search alice "which language?" --top-k 3
    headroom-memory --db memory.db history <memory-id>
    headroom-memory --db memory.db stats [--user alice]
    headroom-memory --db-url postgresql://user:pw@host:5432/db stats
    headroom-memory migrate --from memory.db --to postgresql://user:pw@host:5432/db
    headroom-memory mcp --db memory.db --user alice [--session s1] [--http 8765]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from headroom_integrations.errors import HeadroomError, InvalidInputError
from headroom_integrations.memory import MemoryConfig, MemoryEngine

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headroom-memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, default=Path("headroom_memory.db"), help="SQLite database file")
    where.add_argument("--db-url", help="database URL instead of --db (postgresql://user:pw@host:5432/db)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the offline demo on a temporary store")
    add = commands.add_parser("add", help="store a memory")
    add.add_argument("user")
    add.add_argument("content")
    add.add_argument("--category", default="fact")
    add.add_argument("--scope")
    add.add_argument("--session")
    add.add_argument("--importance", type=float, default=0.5)
    search = commands.add_parser("search", help="hybrid search of a user's memories")
    search.add_argument("user")
    search.add_argument("query")
    search.add_argument("--session")
    search.add_argument("--top-k", type=int, default=5)
    history = commands.add_parser("history", help="every version of a memory's fact")
    history.add_argument("memory_id")
    stats = commands.add_parser("stats", help="counts by category and scope")
    stats.add_argument("--user")
    migrate = commands.add_parser("migrate", help="copy a store to another backend (no re-embedding)")
    migrate.add_argument("--from", dest="source", required=True, help="source file path or database URL")
    migrate.add_argument("--to", dest="target", required=True, help="target file path or database URL")
    migrate.add_argument("--batch-size", type=int, default=1000, help="memories per transaction")
    mcp = commands.add_parser("mcp", help="serve one user's memories to MCP clients (stdio, or HTTP with --http)")
    mcp.add_argument("--user", required=True, help="whose memories (tools never choose another user)")
    mcp.add_argument("--session", help="also see and write this session's memories")
    mcp.add_argument("--agent", help="also see and write this agent's memories (needs --session)")
    mcp.add_argument("--http", type=int, metavar="PORT", help="streamable HTTP on 127.0.0.1:PORT instead of stdio")
    mcp_where = mcp.add_mutually_exclusive_group()  # also accepted after the command
    mcp_where.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="SQLite database file")
    mcp_where.add_argument("--db-url", default=argparse.SUPPRESS, help="database URL instead of --db")
    return parser


def _serve_mcp(args: argparse.Namespace, engine: MemoryEngine) -> int:
    from headroom_integrations.mcp_server import MemoryTools, build_server

    server = build_server(MemoryTools(engine, args.user, args.session, args.agent))
    if args.http is None:
        server.run("stdio")
    else:
        if not 0 < args.http < 65536:
            raise InvalidInputError(f"--http must be a port number (1-65535), got {args.http}")
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    return 0


class _Progress:
    """A one-line progress bar on stderr: done/total, rate and time left."""

    def __init__(self, what: str) -> None:
        self.what, self.started, self.shown = what, time.perf_counter(), False

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate and total > done else 0.0
        width = 30
        filled = width if not total else min(width, int(width * done / total))
        bar = "#" * filled + "." * (width - filled)
        print(f"\r[{bar}] {done:,}/{total:,} {self.what}  {rate:,.0f}/s  ETA {left:,.0f}s", end="", file=sys.stderr)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _migrate(args: argparse.Namespace) -> int:
    from headroom_integrations.memory.backends.postgres import masked
    from headroom_integrations.memory.migration import migrate

    progress = _Progress("memories")
    try:
        report = migrate(args.source, args.target, batch_size=args.batch_size, progress=progress)
    finally:
        progress.close()
    target = masked(args.target) if "://" in args.target else args.target
    print(f"copied {report.memories} memories ({report.skipped} already there) and {report.messages} "
          f"messages to {target} (embedder {report.embedder})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from headroom_integrations.demo import main as demo

        demo([])
        return 0
    try:
        if args.command == "migrate":
            return _migrate(args)
        url = args.db_url or os.environ.get("HEADROOM_DB_URL")
        config = MemoryConfig(db_url=url) if url else MemoryConfig(db_path=args.db)
        with MemoryEngine(config) as engine:
            if args.command == "mcp":
                return _serve_mcp(args, engine)
            if args.command == "add":
                m = engine.add(args.content, user_id=args.user, category=args.category, scope=args.scope,
                               session_id=args.session, importance=args.importance)
                print(m.id)
            elif args.command == "search":
                for hit in engine.search(args.query, user_id=args.user, session_id=args.session, top_k=args.top_k):
                    print(f"{hit.score:.3f}\t{hit.memory.category.value}\t{hit.id}\t{hit.content}")
            elif args.command == "history":
                for m in engine.get_history(args.memory_id):
                    print(f"{'*' if m.is_current else ' '} {m.valid_from:%Y-%m-%d %H:%M:%S}\t{m.id}\t{m.content}")
            else:
                print(json.dumps(engine.stats(args.user), indent=2))
    except HeadroomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
