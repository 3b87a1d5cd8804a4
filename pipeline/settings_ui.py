"""Settings of the explorer at ``/ui`` (:mod:`pipeline.ui`): the session cookie and where its
third-party scripts are installed.

:class:`UISettings` is a base of :class:`pipeline.settings.Settings` (one object, read from the
environment once at the entry point); it holds fields only, no configuration of its own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class UISettings(BaseSettings):
    """Explorer settings (``PATTERNS_<FIELD NAME>``); see :class:`pipeline.settings.Settings`."""

    ui_session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the explorer's (/ui) session cookies; set it (the same on "
        "every API replica) to keep sign-ins across restarts. Unset: a random key per process.",
    )
    ui_cookie_secure: bool = Field(
        default=False,
        description="Mark the explorer's session cookie Secure (sent over HTTPS only): set it "
        "when the API is served behind TLS.",
    )
    ui_vendor_dir: Path | None = Field(
        default=None,
        description="Folder of the explorer's third-party scripts (htmx, Cytoscape.js) as npm "
        "installs them (node_modules); default: .tools/ui/node_modules of the checkout.",
    )
