"""Reading TypeScript compiler errors: ``tsc`` output (plain or pretty) and the JSONL records of
``shared/data/typescript``. Pure: no I/O but reading the given files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import MalformedInputError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `src/a.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.`
_PLAIN = re.compile(
    r"^(?P<path>.+?)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$"
)
# `src/a.ts:12:5 - error TS2322: Type 'string' is not assignable to type 'number'.` (--pretty)
_PRETTY = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+) - error (?P<code>TS\d+): (?P<msg>.*)$"
)
# A code-frame source line of --pretty output: `12     const x: number = "a";`
_RELATED = re.compile(r"^\s+\S+:\d+:\d+$")
_FRAME = re.compile(r"^\s*(?P<num>\d+) (?P<src>.*)$")


@dataclass(frozen=True)
class TsDiagnostic:
    """One compiler error, as read from ``tsc`` output or a JSONL record."""

    project: str
    file_path: str
    line: int
    column: int | None
    error_code: str
    error_message: str
    code_snippet: str | None = None
    source: str | None = None

    @property
    def message_hash(self) -> str:
        """SHA-256 hex of the message: with project, path, line and code, the error's identity."""
        return hashlib.sha256(self.error_message.encode()).hexdigest()


def parse_tsc_output(output: str, project: str) -> list[TsDiagnostic]:
    """Parse ``tsc`` output, with ``--pretty false`` or the default pretty format.

    Lines indented under a diagnostic (tsc's elaboration) are appended to its message. With the
    pretty format, the numbered source lines of the code frame become the snippet. ANSI colours
    are ignored; lines that are not diagnostics (summaries, blank lines) are skipped.
    """
    found: list[dict[str, Any]] = []
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        match = _PLAIN.match(line)
        pretty = _PRETTY.match(line) if match is None else None
        if match or pretty:
            header = (match or pretty).groupdict()  # type: ignore[union-attr]
            found.append(
                {**header, "pretty": pretty is not None, "more": [], "frame": [], "related": False}
            )
            continue
        if not found or not line.strip() or set(line.strip()) <= {"~"}:
            continue
        current = found[-1]
        if _RELATED.match(line):
            # Related information (`  file.ts:1:7` and its own frame) is not this error's code.
            current["related"] = True
        if current["related"]:
            continue
        frame = _FRAME.match(line) if current["pretty"] else None
        if frame:
            current["frame"].append(frame.group("src"))
        elif line.startswith((" ", "\t")) and not current["frame"]:
            current["more"].append(line)
    return [
        TsDiagnostic(
            project=project,
            file_path=d["path"].strip(),
            line=int(d["line"]),
            column=int(d["col"]),
            error_code=d["code"],
            error_message="\n".join([d["msg"].strip(), *d["more"]]).strip(),
            code_snippet="\n".join(d["frame"]) or None,
        )
        for d in found
    ]


def parse_jsonl_record(obj: Any, default_project: str) -> TsDiagnostic:
    """One record of ``shared/data/typescript/tsc-errors.jsonl`` (see its README).

    The project is the repository named first in ``source`` (``microsoft/TypeScript ...``), else
    ``default_project``.

    Raises:
        MalformedInputError: a required field is missing or of the wrong type.
    """
    if not isinstance(obj, dict):
        raise MalformedInputError("record is not a JSON object")
    try:
        path, line, code, msg = (
            obj["file_path"],
            obj["line"],
            obj["error_code"],
            obj["error_message"],
        )
    except KeyError as exc:
        raise MalformedInputError(f"record lacks {exc.args[0]!r}") from exc
    if not (isinstance(path, str) and isinstance(line, int) and isinstance(code, str)
            and isinstance(msg, str) and re.fullmatch(r"TS\d+", code)):  # fmt: skip
        raise MalformedInputError("file_path, line, error_code (TSnnnn), error_message mistyped")
    source = obj.get("source") if isinstance(obj.get("source"), str) else None
    project = source.split()[0] if source and "/" in source.split()[0] else default_project
    column = obj.get("column") if isinstance(obj.get("column"), int) else None
    snippet = obj.get("code_snippet") if isinstance(obj.get("code_snippet"), str) else None
    return TsDiagnostic(project, path, line, column, code, msg, snippet, source)


def read_diagnostics(
    paths: Iterable[Path], project: str
) -> tuple[list[TsDiagnostic], list[tuple[str, str]]]:
    """Read ``.jsonl`` files as records and any other file as ``tsc`` output.

    Returns ``(diagnostics, malformed)``, each malformed item ``(file:line, reason)``.
    """
    diagnostics: list[TsDiagnostic] = []
    malformed: list[tuple[str, str]] = []
    for path in paths:
        if path.suffix == ".jsonl":
            for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    diagnostics.append(parse_jsonl_record(json.loads(raw), project))
                except (json.JSONDecodeError, MalformedInputError) as exc:
                    malformed.append((f"{path}:{lineno}", str(exc)))
        else:
            diagnostics.extend(parse_tsc_output(path.read_text(encoding="utf-8"), project))
    return diagnostics, malformed
