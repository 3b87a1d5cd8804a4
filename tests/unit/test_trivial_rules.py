"""Trivial interactions recognised without a model (pipeline.extract.trivial), on hand-made
pull-request texts in the shape pipeline.intake.normalize writes."""

from __future__ import annotations

import pytest

from pipeline.extract.trivial import trivial_reason


def pr(title: str, body: str = "", files: tuple[str, ...] = ("celery/app/base.py",)) -> str:
    parts = [f"Pull request #1: {title}"]
    if body:
        parts.append(body)
    if files:
        listed = "\n".join(f"- {f} (+1/-1)" for f in files)
        parts.append(f"Files changed ({len(files)}):\n{listed}")
    return "\n\n".join(parts)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (pr("Bump pytest from 8.0.0 to 8.0.1", "Bumps pytest.", ("requirements/test.txt",)),
         "dependency update"),
        (pr("Update cryptography from 42.0.1 to 42.0.2"), "dependency update"),
        (pr("Update elasticsearch requirement from <=8.15.0 to <=8.17.0"), "dependency update"),
        (pr("[pre-commit.ci] pre-commit autoupdate"), "dependency update"),
        (pr("Scheduled weekly dependency update for week 44"), "dependency update"),
        (pr("Prepare for (pre) release: v5.6.0b2"), "release preparation"),
        (pr("Bump version: 5.4.0rc2 → 5.4.0"), "release preparation"),
        (pr("v5.3.1"), "release preparation"),
        (pr('Revert "Update daemonizing.rst"', "This reverts commit 96ec6db611f86f44a99f5."),
         "revert without a reason"),
        (pr('Revert "Add a flag"', "", ("docs/x.rst",)), "revert without a reason"),
        (pr("Updated Blacksmith SVG logo", "", ("README.rst", "docs/images/logo.svg")),
         "logo or people update"),
        (pr("Update CONTRIBUTORS.txt", "", ("CONTRIBUTORS.txt",)), "logo or people update"),
        (pr("Update s3.txt", "", ("requirements/extras/s3.txt",)),
         "dependency manifests only, no reason given"),
        (pr("pytest 4.5", "", ("requirements/test.txt", "requirements/docs.txt")),
         "dependency manifests only, no reason given"),
        (pr("Remove ICC profiles", "", ("docs/images/a.png", "docs/images/b.JPG")), "images only"),
    ],
)  # fmt: skip
def test_trivial_shapes(content: str, reason: str) -> None:
    assert trivial_reason(content) == reason


@pytest.mark.parametrize(
    "content",
    [
        pr("fix: clear the timer while catch the exception"),
        pr("Fix flake8 due latest release"),  # "release" alone is not release prep
        pr("revert implicit checking of header_result's length"),  # not git's revert
        pr('Revert "Add a flag"', "It broke the worker on Windows; see #12."),  # a reason
        pr("Update msgpack.txt to fix build issues", "Builds failed on 3.12 because...",
           ("requirements/extras/msgpack.txt",)),  # a reason is given
        pr("fix no logo image in worker splash screen", "", ("celery/apps/worker.py",)),  # code
        pr("Update Python version requirement to 3.9", "", ("setup.py",)),  # left to the model
        pr("Bump", "", ()),
        "Issue #3: Bump pytest from 8.0.0 to 8.0.1 breaks the worker",  # an issue about it
        "a conversation about bumping pytest from 8.0.0 to 8.0.1",
        "",
    ],
)  # fmt: skip
def test_left_to_the_model(content: str) -> None:
    assert trivial_reason(content) is None


def test_a_truncated_file_list_is_not_all_manifests() -> None:
    content = pr("Update pins", "", ("requirements/a.txt",)) + "\n- ... and 31 more"
    assert trivial_reason(content) is None
