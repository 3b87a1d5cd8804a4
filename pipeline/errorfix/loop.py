"""Compiler in the loop: every suggested fix is compiled with ``tsc`` (where there is one); a fix
tsc does not verify (it does not compile, or still reports its error code) goes back to the model
once, with tsc's diagnostics (:func:`retry_messages`); the retried fixes are compiled again, in
one batched engine call and one tsc run for the whole batch.

Of a fix and its retry the one tsc rates higher (:data:`RANK`: ``verified`` over
``does_not_compile`` over ``unresolved``) is kept, the first at a tie, so the loop never makes a
suggestion worse; the first fix's check is kept beside it (``first_check_status``), which is how
``patterns errors report`` gives the rates before and after the retry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.db.models import CodeAnalysis, TypeScriptError
from pipeline.db.status import FixCheck
from pipeline.errorfix.compiler import TscCheck, check_fixes
from pipeline.errorfix.prompt import FixSuggestion, fix_messages, parse_fix
from pipeline.extract.attempts import generate_with_retries, one_retry
from pipeline.llm.base import GenerationRequest, StructuredLLM
from pipeline.settings import Settings
from pipeline.types import TaskType

#: How tsc rates a fix, best first; a retry replaces the first fix only when it ranks higher.
RANK: dict[FixCheck, int] = {
    FixCheck.VERIFIED: 3,
    FixCheck.DOES_NOT_COMPILE: 2,
    FixCheck.UNRESOLVED: 1,
    FixCheck.UNCHECKED: 0,
}

#: A syntax error's code in a diagnostic line (``line 1, col 5: TS1005 ';' expected.``).
_SYNTAX = re.compile(r": TS1\d{3} ")


def check_status(check: TscCheck | None) -> FixCheck:
    """The :class:`FixCheck` of a compiler check (``unchecked`` for ``None``: no tsc ran)."""
    if check is None:
        return FixCheck.UNCHECKED
    if check.verified:
        return FixCheck.VERIFIED
    return FixCheck.DOES_NOT_COMPILE if check.error_resolved else FixCheck.UNRESOLVED


def compiler_feedback(error: TypeScriptError, fix: FixSuggestion, check: TscCheck) -> str:
    """What goes back with a rejected fix: the fix, what tsc reported for it (its diagnostics,
    lines of the fix as written), what is wrong, and the reply format again."""
    if not check.error_resolved and any(_SYNTAX.search(d) for d in check.diagnostics):
        problem = "That fix does not parse as TypeScript."
    elif not check.error_resolved:
        problem = f"tsc still reports {error.error_code} for that fix."
    else:
        problem = f"{error.error_code} is gone, but tsc reports other errors in that fix."
    listed = "\n".join(f"- {d}" for d in check.diagnostics) or "- (no details)"
    return (
        f"A previous fix was rejected by `tsc --noEmit`:\n{fix.fixed_code}\n\ntsc reported:\n"
        f"{listed}\n\n{problem} Write fixed_code as TypeScript code only (no prose): the given "
        "code, corrected so that it compiles. Reply with JSON only: fixed_code, explanation (one "
        "sentence) and confidence (0 to 1)."
    )


def retry_messages(
    error: TypeScriptError,
    examples: Sequence[CodeAnalysis],
    fix: FixSuggestion,
    check: TscCheck,
) -> list[dict[str, str]]:
    """The first request's messages (:func:`~pipeline.errorfix.prompt.fix_messages`) with the
    rejected fix and :func:`compiler_feedback` added to the last user turn.

    Not as a continued conversation (the fix as the model's earlier answer, the feedback as a new
    turn): measured on 60 failing fixes of ``shared/data/typescript/tsc-errors.jsonl`` with the
    default model, that repeats its first answer 51 times in 60 and verifies none; one request
    holding the rejected fix, sampled at ``errorfix_compile_retry_temperature`` (0.7), repeats
    it twice and verifies 3 (greedy: 29 repeats, none verified). The retry is sampled without a
    per-request seed (see :func:`compile_loop`), so it is not repeatable."""
    messages = fix_messages(error, examples)
    ask = messages[-1]["content"]
    messages[-1] = {"role": "user", "content": f"{ask}\n\n{compiler_feedback(error, fix, check)}"}
    return messages


@dataclass
class CheckedFix:
    """The fix kept for one error, tsc's check of it (``None``: unchecked), the check of the
    model's first fix, and how many fixes tsc compiled for it (0, 1, or 2 after a retry)."""

    fix: FixSuggestion
    check: TscCheck | None
    first: TscCheck | None
    compile_attempts: int

    @property
    def status(self) -> FixCheck:
        """The kept fix's :class:`FixCheck`."""
        return check_status(self.check)

    @property
    def first_status(self) -> FixCheck:
        """The first fix's :class:`FixCheck`."""
        return check_status(self.first)


@dataclass
class LoopResult:
    """Per error id, the :class:`CheckedFix`; the retry's ``llm_calls`` rows; how many fixes
    were sent back (``retried``) and how many retries replaced their first fix (``improved``)."""

    fixes: dict[int, CheckedFix] = field(default_factory=dict)
    calls: list[dict[str, object]] = field(default_factory=list)
    retried: int = 0
    improved: int = 0


def compile_loop(
    *,
    engine: StructuredLLM,
    settings: Settings,
    tsc: str | None,
    errors: Mapping[int, TypeScriptError],
    examples: Mapping[int, Sequence[Any]],
    fixes: Mapping[int, FixSuggestion],
) -> LoopResult:
    """Compile ``fixes`` (error id → the model's fix), send the ones tsc does not verify back to
    the model once with its diagnostics (when ``errorfix_compile_retry``), compile the retries,
    and keep the better fix of each (module notes). Without ``tsc`` (or when tsc cannot run)
    every fix is kept unchecked.

    Raises:
        RetryableError / PermanentError: from the engine, when the retry call fails outright.
    """
    out = LoopResult()
    first = check_fixes(tsc, _sources(fixes, errors)) if tsc and fixes else {}
    for error_id, fix in fixes.items():
        check = first.get(error_id)
        out.fixes[error_id] = CheckedFix(fix, check, check, 1 if check else 0)
    failing = [i for i, c in first.items() if not c.verified]
    if not (tsc and failing and settings.errorfix_compile_retry):
        return out

    def request(error_id: int, _retry: object) -> GenerationRequest:
        return GenerationRequest(
            retry_messages(errors[error_id], examples[error_id], fixes[error_id], first[error_id]),
            FixSuggestion.model_json_schema(),
            settings.errorfix_compile_retry_max_tokens,
            settings.errorfix_compile_retry_temperature,
            # No per-request seed: vLLM 0.32's CPU build fails a whole batch ("CPU Generator
            # does not use offset") when a seeded, sampled request is prefilled in chunks, as
            # prefix caching makes retries (same system prompt) do. Retries are not repeatable.
            seed=None,
            task_type=TaskType.ERROR_FIX,
        )

    second = generate_with_retries(
        engine, failing, request=request, parse=parse_fix,
        decide=lambda attempt, exc: one_retry(attempt, exc, max_tokens=0, temperature=0.0,
                                              max_attempts=1),
        task_type=TaskType.ERROR_FIX,
    )  # fmt: skip
    out.calls, out.retried = list(second.calls), len(failing)
    again = check_fixes(tsc, _sources(second.results, errors)) if second.results else {}
    for error_id in failing:
        kept = out.fixes[error_id]
        recheck = again.get(error_id)
        if recheck is None:
            continue
        kept.compile_attempts = 2
        if RANK[check_status(recheck)] > RANK[kept.status]:
            kept.fix, kept.check = second.results[error_id], recheck
            out.improved += 1
    return out


def _sources(
    fixes: Mapping[int, FixSuggestion], errors: Mapping[int, TypeScriptError]
) -> dict[int, tuple[str, str]]:
    return {i: (f.fixed_code, errors[i].error_code) for i, f in fixes.items()}
