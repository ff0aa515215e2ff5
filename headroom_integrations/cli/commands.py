"""The commands of ``headroom-memory``: each takes the parsed arguments, an open engine and an
:class:`~headroom_integrations.cli.output.Output`, and returns the exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from headroom_integrations.cli.output import Output, memory_fields
from headroom_integrations.errors import InvalidInputError, MemoryNotFoundError
from headroom_integrations.memory import Memory, MemoryEngine, MemoryFilter, SearchResult

__all__ = ["COMMANDS", "Command"]

Command = Callable[[argparse.Namespace, MemoryEngine, Output], int]
OK, NOT_FOUND, BAD_INPUT = 0, 1, 2

_MEMORY_COLUMNS = ["id", "category", "scope", "session", "agent", "valid_from", "current", "content", "observed"]


def _row(m: Memory) -> list[Any]:
    return [m.id, m.category.value, m.scope.value, m.session_id, m.agent_id,
            m.valid_from.isoformat(timespec="seconds") if m.valid_from else None, m.is_current, m.content,
            m.observed_at.isoformat(timespec="seconds")]


def _memories(out: Output, memories: list[Memory], title: str | None = None) -> None:
    if out.as_json:
        out.data([memory_fields(m) for m in memories])
    else:
        out.table(_MEMORY_COLUMNS, [_row(m) for m in memories], title)


def _found(engine: MemoryEngine, memory_id: str) -> Memory:
    memory = engine.get(memory_id)
    if memory is None:
        raise MemoryNotFoundError(memory_id)
    return memory


def users(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Every user with their memory counts."""
    out.table(["user_id", "current", "total"], [[u.user_id, u.current, u.total] for u in engine.users()])
    return OK


def list_(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """A user's memories (current ones unless ``--all-versions`` or ``--as-of``), oldest first."""
    flt = MemoryFilter(user_id=args.user, session_id=args.session, agent_id=args.agent, turn_id=args.turn,
                       categories=args.category, scopes=args.scope, include_superseded=args.all_versions,
                       valid_at=args.as_of, observed_after=args.observed_after,
                       observed_before=args.observed_before, limit=args.limit)
    _memories(out, engine.query(flt))
    return OK


def search(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Hybrid search; ``--explain`` shows the parts of each score (vector, keyword, context, lifts)."""
    hits = engine.search(args.query, user_id=args.user, session_id=args.session, agent_id=args.agent,
                         turn_id=args.turn, top_k=args.top_k, categories=args.category, scopes=args.scope,
                         include_superseded=args.all_versions, valid_at=args.as_of,
                         observed_after=args.observed_after, observed_before=args.observed_before, now=args.now)
    if out.as_json:
        out.data([_hit_fields(hit) for hit in hits])
        return OK
    columns = ["score", "id", "category", "content"]
    if args.explain:
        columns[1:1] = ["vector", "keyword", "context", "terms", "time", "diversity", "cosine"]
    rows = []
    for hit in hits:
        row: list[Any] = [f"{hit.fused_score:.3f}", hit.id, hit.memory.category.value, hit.content]
        if args.explain:
            parts = (hit.vector_part, hit.keyword_part, hit.context_part, hit.common_term_part, hit.time_part,
                     hit.diversity_part, hit.score)
            row[1:1] = [f"{part:.3f}" for part in parts]
        rows.append(row)
    out.table(columns, rows)
    return OK


def _hit_fields(hit: SearchResult) -> dict[str, Any]:
    return {"score": hit.fused_score, "cosine": hit.score, "keyword": hit.keyword_score,
            "parts": {"vector": hit.vector_part, "keyword": hit.keyword_part, "context": hit.context_part,
                      "terms": hit.common_term_part, "time": hit.time_part},
            "diversity": hit.diversity_part,
            "vector_rank": hit.vector_rank, "text_rank": hit.text_rank, "memory": memory_fields(hit.memory)}


def add(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Store a memory; prints its id."""
    metadata = _metadata(args.metadata)
    m = engine.add(args.content, user_id=args.user, session_id=args.session, agent_id=args.agent,
                   turn_id=args.turn, category=args.category, scope=args.scope_of, importance=args.importance,
                   metadata=metadata, observed_at=args.observed_at)
    out.data(memory_fields(m)) if out.as_json else out.line(m.id)
    return OK


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"--metadata must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError("--metadata must be a JSON object")
    return value


def show(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Every field of one memory."""
    out.record(memory_fields(_found(engine, args.memory_id)))
    return OK


def history(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Every version of a memory's fact, oldest first."""
    _memories(out, engine.get_history(args.memory_id))
    return OK


def supersede(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Replace a fact with a new version; prints the new version's id."""
    m = engine.supersede(args.memory_id, args.content, category=args.category, importance=args.importance)
    out.data(memory_fields(m)) if out.as_json else out.line(m.id)
    return OK


def rollback(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Make an older version current again (recorded as a new version); prints its id."""
    m = engine.rollback(args.memory_id)
    out.data(memory_fields(m)) if out.as_json else out.line(m.id)
    return OK


def forget(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Delete a memory (or its whole history), or a user's memories (of one session); asks first."""
    if (args.memory_id is None) == (args.user is None):
        raise InvalidInputError("forget takes a memory id or --user (not both)")
    if args.memory_id is not None:
        memory = _found(engine, args.memory_id)
        what = f"{'every version of ' if args.all_versions else ''}memory {memory.id} ({memory.content[:60]!r})"
    else:
        if args.purge and args.session is not None:
            raise InvalidInputError("--purge erases a whole user: it does not take --session")
        what = f"{'every trace of ' if args.purge else 'the memories of '}user {args.user!r}"
        what += f" in session {args.session!r}" if args.session else ""
    if not args.yes and not _confirmed(f"Forget {what}?"):
        print("not forgotten", file=sys.stderr)
        return BAD_INPUT
    if args.memory_id is not None:
        removed = 1 if engine.delete(args.memory_id, all_versions=args.all_versions) else 0
        result: dict[str, int] = {"memories": removed}
    elif args.purge:
        result = engine.purge(args.user)
    else:
        result = {"memories": engine.clear(args.user, session_id=args.session)}
    out.data(result) if out.as_json else out.line(f"forgot {result['memories']} memories")
    return OK


def _confirmed(question: str) -> bool:
    if not sys.stdin.isatty():
        raise InvalidInputError("forget asks for confirmation on a terminal: pass --yes to run it unattended")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def stats(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Counts by category and scope (of one user, or the whole store)."""
    counts = engine.stats(args.user)
    if out.as_json:
        out.data(counts)
        return OK
    rows = [["total", counts["total"]], ["current", counts["current"]], ["superseded", counts["superseded"]]]
    rows += [[f"category {name}", n] for name, n in counts["categories"].items()]
    rows += [[f"scope {name}", n] for name, n in counts["scopes"].items()]
    out.table(["count", "value"], rows)
    return OK


def export(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """JSON Lines to stdout or ``--output``."""
    target = args.output if args.output is not None else sys.stdout
    report = engine.export(target, user_id=args.user, with_vectors=args.with_vectors)
    if args.output is not None:
        out.data({"memories": report.memories}) if out.as_json else out.line(
            f"exported {report.memories} memories to {args.output}")
    return OK


def import_(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """JSON Lines from a file (or ``-`` for stdin); exit 2 when a line failed (the others are stored)."""
    from headroom_integrations.cli.progress import Progress

    progress = Progress("lines") if sys.stderr.isatty() else None
    try:
        report = engine.import_(sys.stdin if args.file == "-" else args.file, batch_size=args.batch_size,
                                progress=progress)
    finally:
        if progress is not None:
            progress.close()
    for number, reason in report.errors:
        print(f"line {number}: {reason}", file=sys.stderr)
    counts = {"added": report.added, "skipped": report.skipped, "failed": report.failed, "embedded": report.embedded}
    out.data(counts) if out.as_json else out.line(
        f"added {report.added}, skipped {report.skipped} (already there), failed {report.failed}; "
        f"embedded {report.embedded}")
    return BAD_INPUT if report.failed else OK


def doctor(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Check the store and repair what is derived from the rows (``--dry-run``: only report);
    exit 1 when problems remain."""
    found = engine.doctor(repair=not args.dry_run)
    remaining = found if args.dry_run else engine.doctor()
    problems = {name: n for name, n in remaining.items() if n}
    if out.as_json:
        out.data({"found": found, "remaining": remaining})
    else:
        out.table(["check", "found", "remaining"], [[name, n, remaining.get(name, 0)] for name, n in found.items()])
        out.line("the store is healthy" if not problems else "problems remain: " + ", ".join(problems)
                 + (" (run doctor without --dry-run to repair)" if args.dry_run else ""))
    return NOT_FOUND if problems else OK


def ui(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Serve the web inspector on 127.0.0.1 (``--host`` to change)."""
    from headroom_integrations.inspector import serve

    if not 0 < args.port < 65536:
        raise InvalidInputError(f"--port must be a port number (1-65535), got {args.port}")
    out.line(f"inspector on http://{args.host}:{args.port}/ ({'read-only' if args.read_only else 'read-write'})")
    serve(engine, host=args.host, port=args.port, read_only=args.read_only)
    return OK


def mcp(args: argparse.Namespace, engine: MemoryEngine, out: Output) -> int:
    """Serve one user's memories to MCP clients (stdio, or streamable HTTP with ``--http``)."""
    from headroom_integrations.mcp_server import MemoryTools, build_server

    server = build_server(MemoryTools(engine, args.user, args.session, args.agent))
    if args.http is None:
        server.run("stdio")
    else:
        if not 0 < args.http < 65536:
            raise InvalidInputError(f"--http must be a port number (1-65535), got {args.http}")
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    return OK


# name -> (function, may create the store, embeds text)
COMMANDS: dict[str, tuple[Command, bool, bool]] = {
    "users": (users, False, False), "list": (list_, False, False), "search": (search, False, True),
    "add": (add, True, True), "show": (show, False, False), "history": (history, False, False),
    "supersede": (supersede, False, True), "rollback": (rollback, False, True), "forget": (forget, False, False),
    "stats": (stats, False, False), "export": (export, False, False), "import": (import_, True, True),
    "doctor": (doctor, False, False), "ui": (ui, False, True), "mcp": (mcp, True, True),
}
