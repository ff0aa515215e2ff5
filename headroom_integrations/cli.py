"""``headroom-memory``: look into and edit a memory store from the shell.

Examples::

    headroom-memory demo
    headroom-memory --db memory.db add alice "Prefers Go" --category preference
    headroom-memory --db memory.db search alice "which language?" --top-k 3
    headroom-memory --db memory.db history <memory-id>
    headroom-memory --db memory.db stats [--user alice]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from headroom_integrations.errors import HeadroomError
from headroom_integrations.memory import MemoryConfig, MemoryEngine

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headroom-memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=Path("headroom_memory.db"), help="database file")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from headroom_integrations.demo import main as demo

        demo([])
        return 0
    try:
        with MemoryEngine(MemoryConfig(db_path=args.db)) as engine:
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
