"""Checking suggested fixes with the TypeScript compiler: ``tsc --noEmit`` over one file per fix,
in one run (:func:`check_fixes`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from pipeline.errorfix.parsing import TsDiagnostic, parse_tsc_output

log = structlog.get_logger(__name__)

#: Diagnostics kept per fix (what goes back to the model in the compiler-in-the-loop retry).
MAX_DIAGNOSTICS = 8
#: Characters kept of one diagnostic's message.
MAX_DIAGNOSTIC_CHARS = 300

#: The checkout's root: ``make install`` puts TypeScript in ``<root>/.tools``.
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TscCheck:
    """Result of compiling a suggested fix.

    ``compiles``: tsc reports nothing. ``error_resolved``: the original error code is no longer
    reported *and* the fix parses (no TS1xxx syntax error): text that is not code would otherwise
    "resolve" any error.
    """

    compiles: bool
    error_resolved: bool
    #: What tsc reported for the fix, one ``line L, col C: TSnnnn message`` per diagnostic
    #: (lines of the fix as the model wrote it; at most :data:`MAX_DIAGNOSTICS`).
    diagnostics: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        """Compiles and resolves its error: the only kind of fix tsc vouches for."""
        return self.compiles and self.error_resolved


def find_tsc(configured: str | None) -> str | None:
    """The ``tsc`` to check fixes with: the configured path, ``tsc`` on PATH, or the one
    ``make install`` puts in ``.tools/node_modules/.bin``; ``None`` when there is none."""
    if configured:
        return configured if Path(configured).exists() else None
    on_path = shutil.which("tsc")
    if on_path:
        return on_path
    local = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "tsc"
    return str(local) if local.exists() else None


def check_fixes(
    tsc: str, fixes: dict[int, tuple[str, str]], timeout_s: float = 120
) -> dict[int, TscCheck]:
    """Compile each fix with ``tsc --noEmit`` in one run, one file per fix.

    Args:
        fixes: error id → (fixed code, original error code such as ``TS2322``).

    Each file ends with ``export {}`` so that it is a module and the fixes' declarations do not
    collide. Returns a check per error id, with tsc's diagnostics for that file
    (:attr:`TscCheck.diagnostics`); empty if tsc could not run.
    """
    if not fixes:
        return {}
    syntax = re.compile(r"TS1\d{3}")
    with tempfile.TemporaryDirectory(prefix="tsfix-") as tmp:
        names: dict[int, str] = {}
        for error_id, (code, _) in fixes.items():
            names[error_id] = f"fix_{error_id}.ts"
            (Path(tmp) / names[error_id]).write_text(f"{code}\nexport {{}};\n", encoding="utf-8")
        reported = _run_tsc(tsc, tmp, list(names.values()), timeout_s)
        if reported is None:
            return {}
        # tsc reports no semantic errors for a program with a syntax error anywhere in it: compile
        # the files that parse again, on their own.
        broken = {
            n for n, found in reported.items() if any(syntax.fullmatch(d.error_code) for d in found)
        }
        if broken:
            rest = [n for n in names.values() if n not in broken]
            again = _run_tsc(tsc, tmp, rest, timeout_s) if rest else {}
            if again is None:
                return {}
            reported = {**{n: reported[n] for n in broken}, **again}
    checks: dict[int, TscCheck] = {}
    for error_id, name in names.items():
        found = reported.get(name, [])
        codes = {d.error_code for d in found}
        checks[error_id] = TscCheck(
            compiles=not found,
            error_resolved=name not in broken and fixes[error_id][1] not in codes,
            diagnostics=tuple(_describe(d) for d in found[:MAX_DIAGNOSTICS]),
        )
    return checks


def _describe(diag: TsDiagnostic) -> str:
    """One diagnostic as the retry prompt shows it: ``line L, col C: TSnnnn message``."""
    message = " ".join(diag.error_message.split())[:MAX_DIAGNOSTIC_CHARS]
    where = f"line {diag.line}" + (f", col {diag.column}" if diag.column else "")
    return f"{where}: {diag.error_code} {message}"


def _run_tsc(
    tsc: str, cwd: str, files: list[str], timeout_s: float
) -> dict[str, list[TsDiagnostic]] | None:
    """Run ``tsc --noEmit`` on ``files``; file name → diagnostics reported (in tsc's order), or
    None if it failed."""
    try:
        proc = subprocess.run(
            [tsc, "--noEmit", "--pretty", "false", "--skipLibCheck", "--target", "es2022", *files],
            cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("tsc_failed", error=str(exc))
        return None
    reported: dict[str, list[TsDiagnostic]] = {}
    for diag in parse_tsc_output(proc.stdout, "check"):
        reported.setdefault(Path(diag.file_path).name, []).append(diag)
    return reported
