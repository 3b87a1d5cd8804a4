"""Parsing TypeScript compiler output and error records (pure)."""

from __future__ import annotations

import pytest

from pipeline.errorfix.parsing import TsDiagnostic, parse_jsonl_record, parse_tsc_output
from pipeline.errorfix.prompt import FixSuggestion, parse_fix
from pipeline.errors import MalformedInputError, ModelOutputError

PLAIN = (
    "src/a.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.\n"
    "src/b.ts(10,1): error TS2345: Argument of type '{ a: string; }' is not assignable to "
    "parameter of type 'Foo'.\n"
    "  Object literal may only specify known properties, and 'a' does not exist in type 'Foo'.\n"
    "\n"
    "Found 2 errors in 2 files.\n"
)

PRETTY = (
    "src/c.ts:5:11 - \x1b[91merror\x1b[0m\x1b[90m TS2339: \x1b[0mProperty 'foo' does not exist "
    "on type 'Bar'.\n\n\x1b[7m5\x1b[0m const y = bar.foo;\n\x1b[7m \x1b[0m \x1b[91m          ~~~"
    "\x1b[0m\n\n  src/c.ts:1:1\n    1 class Bar {}\n\nFound 1 error in src/c.ts\x1b[90m:5\x1b[0m\n"
)


def test_plain_output_with_elaboration() -> None:
    first, second = parse_tsc_output(PLAIN, "acme/web")
    assert first == TsDiagnostic(
        "acme/web", "src/a.ts", 3, 7, "TS2322", "Type 'string' is not assignable to type 'number'."
    )
    assert second.error_code == "TS2345" and second.line == 10
    assert second.error_message.splitlines()[1].strip().startswith("Object literal may only")
    assert second.code_snippet is None


def test_pretty_output_strips_colour_and_keeps_the_code_frame() -> None:
    (diag,) = parse_tsc_output(PRETTY, "p")
    assert (diag.file_path, diag.line, diag.column, diag.error_code) == (
        "src/c.ts",
        5,
        11,
        "TS2339",
    )
    assert diag.error_message == "Property 'foo' does not exist on type 'Bar'."
    assert diag.code_snippet == "const y = bar.foo;"


def test_non_diagnostics_are_ignored() -> None:
    assert parse_tsc_output("Version 5.9.3\n\nFound 0 errors.\n", "p") == []


def test_message_hash_is_the_identity_of_the_message() -> None:
    a, b = parse_tsc_output(PLAIN, "p")
    assert a.message_hash != b.message_hash and len(a.message_hash) == 64


RECORD = {
    "id": "x.errors.txt#1",
    "file_path": "tests/cases/compiler/x.ts",
    "line": 4,
    "column": 5,
    "error_code": "TS2511",
    "error_message": "Cannot create an instance of the abstract class 'A'.",
    "code_snippet": "abstract class A {}\nnew A();",
    "source": "microsoft/TypeScript tests/baselines/reference/x.errors.txt",
}


def test_jsonl_record_takes_project_from_source() -> None:
    diag = parse_jsonl_record(RECORD, "default")
    assert diag.project == "microsoft/TypeScript"
    assert diag.code_snippet == "abstract class A {}\nnew A();"
    without_source = parse_jsonl_record({**RECORD, "source": None}, "default")
    assert without_source.project == "default"


@pytest.mark.parametrize(
    "change",
    [{"line": "4"}, {"error_code": "2511"}, {"error_message": None}, {"file_path": 3}],
)
def test_mistyped_record_is_malformed(change: dict[str, object]) -> None:
    with pytest.raises(MalformedInputError):
        parse_jsonl_record({**RECORD, **change}, "default")


def test_record_missing_a_field_is_malformed() -> None:
    record = dict(RECORD)
    del record["line"]
    with pytest.raises(MalformedInputError, match="line"):
        parse_jsonl_record(record, "default")


def test_parse_fix_validates_and_flags_truncation() -> None:
    good = FixSuggestion(fixed_code="const x = 1;", explanation="Use a number.", confidence=0.8)
    assert parse_fix(good.model_dump_json(), "stop") == good
    with pytest.raises(ModelOutputError) as truncated:
        parse_fix(good.model_dump_json(), "length")
    assert truncated.value.truncated
    with pytest.raises(ModelOutputError, match="confidence"):
        parse_fix('{"fixed_code":"x","explanation":"y","confidence":2}', "stop")
    with pytest.raises(ModelOutputError, match="empty fixed_code"):
        parse_fix('{"fixed_code":"   ","explanation":"y","confidence":0.5}', "stop")
