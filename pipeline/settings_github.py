"""Settings of missed-delivery recovery: which GitHub webhooks to look at, and how often beat
asks (``patterns github recover``, :mod:`pipeline.github.recover`).

:class:`GitHubRecoverSettings` is a base of :class:`pipeline.settings.Settings` (one object, read
from the environment once at the entry point); it holds fields only, no configuration of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

#: ``owner/name`` of a repository, or an organisation's login.
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_ORG = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class HookRef:
    """One webhook whose deliveries GitHub lists: a repository's (``target`` = ``owner/name``),
    an organisation's (``target`` = its login), both with ``hook_id``, or the GitHub App's own
    (``kind`` ``app``, no target or id; its endpoints need an app JWT as the token)."""

    kind: Literal["repo", "org", "app"]
    target: str = ""
    hook_id: int = 0

    @property
    def deliveries_path(self) -> str:
        """The REST path that lists this hook's deliveries (docs.github.com, "List deliveries
        for a repository webhook" / "... an organization webhook" / "... an app webhook");
        ``{path}/{delivery_id}/attempts`` redelivers one."""
        if self.kind == "app":
            return "/app/hook/deliveries"
        owner = "repos" if self.kind == "repo" else "orgs"
        return f"/{owner}/{self.target}/hooks/{self.hook_id}/deliveries"

    def __str__(self) -> str:
        return "app" if self.kind == "app" else f"{self.kind}:{self.target}:{self.hook_id}"


def parse_hooks(spec: str) -> tuple[HookRef, ...]:
    """Parse ``PATTERNS_GITHUB_HOOKS``: a comma list of ``repo:OWNER/NAME:HOOK_ID``,
    ``org:ORG:HOOK_ID`` and ``app``; blanks are ignored, duplicates kept once.

    Raises:
        ValueError: an item of another shape (the message names it).
    """
    hooks: list[HookRef] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if item == "app":
            hook = HookRef("app")
        else:
            kind, _, rest = item.partition(":")
            target, _, hook_id = rest.rpartition(":")
            pattern = _REPO if kind == "repo" else _ORG if kind == "org" else None
            if pattern is None or not pattern.match(target) or not hook_id.isdigit():
                raise ValueError(
                    f"bad hook {item!r}: expected repo:OWNER/NAME:HOOK_ID, org:ORG:HOOK_ID or app"
                )
            hook = HookRef("repo" if kind == "repo" else "org", target, int(hook_id))
        if hook not in hooks:
            hooks.append(hook)
    return tuple(hooks)


class GitHubRecoverSettings(BaseSettings):
    """Missed-delivery recovery settings (``PATTERNS_<FIELD NAME>``); see
    :class:`pipeline.settings.Settings`."""

    github_hooks: Annotated[tuple[HookRef, ...], NoDecode] = Field(
        default=(),
        description="Webhooks whose failed deliveries `patterns github recover` (and beat) asks "
        "GitHub to redeliver: comma list of repo:OWNER/NAME:HOOK_ID, org:ORG:HOOK_ID, app "
        "(the app's hook needs an app JWT as PATTERNS_GITHUB_TOKEN). Empty: none.",
    )
    github_recover_interval_s: float = Field(
        default=3600,
        ge=0,
        description="Seconds between beat's recovery runs (needs PATTERNS_GITHUB_TOKEN and "
        "PATTERNS_GITHUB_HOOKS); 0 disables them.",
    )

    @field_validator("github_hooks", mode="before")
    @classmethod
    def _parse_hooks(cls, value: object) -> object:
        return parse_hooks(value) if isinstance(value, str) else value
