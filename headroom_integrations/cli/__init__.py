"""``headroom-memory``: see, fix and move what an assistant remembers, from the shell.

Examples::

    headroom-memory --db memory.db add alice "Prefers Go" --category preference
    headroom-memory --db memory.db users
    headroom-memory --db memory.db list alice --all-versions
    headroom-memory --db memory.db search alice "which language?" --top-k 3 --explain
    headroom-memory --db memory.db forget --user alice --session s1 --yes
    headroom-memory --db memory.db export --user alice > alice.jsonl
    headroom-memory --db other.db import alice.jsonl
    headroom-memory --db-url postgresql://user:pw@host:5432/db doctor --dry-run
    headroom-memory --db memory.db ui --port 8765 --read-only
    headroom-memory migrate --from memory.db --to postgresql://user:pw@host:5432/db

Options before or after the command: ``--db PATH`` / ``--db-url URL`` (or ``HEADROOM_DB`` /
``HEADROOM_DB_URL``), ``--json``, ``--embedder local|openai|ollama``, ``--model``, ``--embedder-url``.
Exit codes: 0 done, 1 not found (a store, a memory) or problems left, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import os
import sys

from headroom_integrations.cli.commands import BAD_INPUT, COMMANDS, NOT_FOUND
from headroom_integrations.cli.output import Output
from headroom_integrations.cli.store import open_engine
from headroom_integrations.errors import HeadroomError, InvalidInputError, MemoryNotFoundError
from headroom_integrations.memory import MemoryCategory, MemoryScope

__all__ = ["main"]

_CATEGORIES = [c.value for c in MemoryCategory]
_SCOPES = [s.value for s in MemoryScope]


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every command takes (``default``: SUPPRESS on commands, so the top level's value stays)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", default=default, help="SQLite file (default: $HEADROOM_DB or headroom_memory.db)")
    where.add_argument("--db-url", default=default, help="database URL instead of --db (or $HEADROOM_DB_URL)")
    parser.add_argument("--json", action="store_true", default=default, help="machine-readable output")
    parser.add_argument("--embedder", choices=["local", "openai", "ollama"], default=default,
                        help="embedder (default: the one the store was made with)")
    parser.add_argument("--model", default=default, help="embedding model of --embedder")
    parser.add_argument("--embedder-url", default=default, help="base URL of the OpenAI-compatible or Ollama server")


def _ids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", help="session id")
    parser.add_argument("--agent", help="agent id (needs --session)")
    parser.add_argument("--turn", help="turn id")


def _narrowing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--category", action="append", choices=_CATEGORIES, help="only this category (repeatable)")
    parser.add_argument("--scope", action="append", choices=_SCOPES, help="only memories at this scope (repeatable)")
    parser.add_argument("--all-versions", action="store_true", help="also superseded versions")
    parser.add_argument("--as-of", metavar="DATE", help="the versions valid at this time (ISO 8601)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headroom-memory", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common])

    commands.add_parser("demo", help="run the offline demo on a temporary store")
    command("users", "users with their memory counts")
    listing = command("list", "a user's memories, oldest first")
    listing.add_argument("user")
    _ids(listing)
    _narrowing(listing)
    listing.add_argument("--observed-after", metavar="WHEN", help="only facts stated at or after this time (ISO 8601)")
    listing.add_argument("--observed-before", metavar="WHEN", help="only facts stated before this time (ISO 8601)")
    listing.add_argument("--limit", type=int, help="at most this many")
    search = command("search", "hybrid search of what a user (and the given session, agent, turn) may see")
    search.add_argument("user")
    search.add_argument("query")
    _ids(search)
    _narrowing(search)
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--observed-after", metavar="WHEN", help="only facts stated at or after this time (ISO 8601)")
    search.add_argument("--observed-before", metavar="WHEN", help="only facts stated before this time (ISO 8601)")
    search.add_argument("--now", metavar="WHEN", help="read times in the query (\"last week\") against this one")
    search.add_argument("--explain", action="store_true",
                        help="show the parts of scores: vector, keyword, context, common terms, time")
    add = command("add", "store a memory (prints its id)")
    add.add_argument("user")
    add.add_argument("content")
    _ids(add)
    add.add_argument("--category", default="fact", choices=_CATEGORIES)
    add.add_argument("--scope", dest="scope_of", choices=_SCOPES, help="default: the narrowest the ids allow")
    add.add_argument("--importance", type=float, default=0.5)
    add.add_argument("--metadata", help="a JSON object")
    add.add_argument("--observed-at", metavar="WHEN", help="when the fact was stated (ISO 8601; default: now)")
    for name, text in (("show", "every field of a memory"), ("history", "every version of a memory's fact"),
                       ("rollback", "make an older version current again (recorded as a new version)")):
        command(name, text).add_argument("memory_id")
    supersede = command("supersede", "replace a fact with a new version (prints its id)")
    supersede.add_argument("memory_id")
    supersede.add_argument("content")
    supersede.add_argument("--category", choices=_CATEGORIES)
    supersede.add_argument("--importance", type=float)
    forget = command("forget", "delete a memory, or a user's memories (asks unless --yes)")
    forget.add_argument("memory_id", nargs="?")
    forget.add_argument("--user", help="forget this user's memories instead")
    forget.add_argument("--session", help="with --user: only what was recorded in this session")
    forget.add_argument("--all-versions", action="store_true", help="with a memory id: its whole history")
    forget.add_argument("--purge", action="store_true", help="with --user: erase every trace (messages, files)")
    forget.add_argument("--yes", "-y", action="store_true", help="do not ask")
    command("stats", "counts by category and scope").add_argument("--user")
    export = command("export", "memories as JSON Lines (to stdout unless --output)")
    export.add_argument("--user", help="only this user's memories")
    export.add_argument("--with-vectors", action="store_true", help="also each memory's embedding")
    export.add_argument("--output", "-o", help="write this file (whole or not at all)")
    importing = command("import", "memories from JSON Lines (ours, minimal lines or mem0's)")
    importing.add_argument("file", help="a .jsonl file, or - for stdin")
    importing.add_argument("--batch-size", type=int, default=500)
    command("doctor", "check the indexes and version chains against the rows, and repair the indexes").add_argument(
        "--dry-run", action="store_true", help="only report what disagrees")
    ui = command("ui", "the web inspector")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    ui.add_argument("--port", type=int, default=8765)
    ui.add_argument("--read-only", action="store_true", help="no forget or rollback buttons")
    migrate = commands.add_parser("migrate", help="copy a store to another backend (no re-embedding)")
    migrate.add_argument("--from", dest="source", required=True, help="source file path or database URL")
    migrate.add_argument("--to", dest="target", required=True, help="target file path or database URL")
    migrate.add_argument("--batch-size", type=int, default=1000, help="memories per transaction")
    mcp = command("mcp", "serve one user's memories to MCP clients (stdio, or HTTP with --http)")
    mcp.add_argument("--user", required=True, help="whose memories (tools never choose another user)")
    mcp.add_argument("--session", help="also see and write this session's memories")
    mcp.add_argument("--agent", help="also see and write this agent's memories (needs --session)")
    mcp.add_argument("--http", type=int, metavar="PORT", help="streamable HTTP on 127.0.0.1:PORT instead of stdio")
    return parser


def _migrate(args: argparse.Namespace) -> int:
    from headroom_integrations.cli.progress import Progress
    from headroom_integrations.memory.backends.postgres import masked
    from headroom_integrations.memory.migration import migrate

    progress = Progress("memories")
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
        run, creates, embeds = COMMANDS[args.command]
        embeds = embeds or (args.command == "doctor" and not args.dry_run)  # a repair embeds waiting rows
        with open_engine(args, create=creates, embeds=embeds) as engine:
            return run(args, engine, Output(as_json=bool(args.json)))
    except MemoryNotFoundError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return NOT_FOUND
    except InvalidInputError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return BAD_INPUT
    except HeadroomError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return NOT_FOUND
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `headroom-memory export | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, MemoryNotFoundError) and type(exc) is MemoryNotFoundError:
        text = f"no memory with id {exc.memory_id!r}"
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
