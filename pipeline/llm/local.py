"""Which local extraction engine a process uses: ``PATTERNS_LOCAL_ENGINE``."""

from __future__ import annotations

from pipeline.llm.base import LocalEngine
from pipeline.settings import Settings


def local_engine(settings: Settings) -> LocalEngine:
    """The engine ``PATTERNS_LOCAL_ENGINE`` names: ``vllm``, in process (the default; loads the
    model and starts vLLM's processes), or ``openai``, an OpenAI-compatible server at
    ``PATTERNS_OPENAI_BASE_URL`` (:class:`pipeline.llm.openai_compat.OpenAICompatEngine`; loads
    no model here).

    Raises:
        ConfigurationError: the chosen engine cannot be built from the settings.
    """
    if settings.local_engine == "openai":
        from pipeline.llm.openai_compat import OpenAICompatEngine

        return OpenAICompatEngine.from_settings(settings)
    from pipeline.llm.vllm_engine import VLLMEngine

    return VLLMEngine.from_settings(settings)
