"""Which dtype the local engine hands vLLM (``PATTERNS_VLLM_DTYPE``, default ``auto``)."""

from __future__ import annotations

import pytest

from pipeline.llm.vllm_engine import resolve_dtype
from pipeline.settings import Settings

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}


@pytest.mark.parametrize(
    ("requested", "on_gpu", "flags", "expected"),
    [
        ("auto", True, AVX2, "auto"),  # GPU: the model's own dtype
        ("auto", False, AVX2, "float32"),  # no native bf16 matmul: emulated bf16 is slower
        ("auto", False, AVX512, "bfloat16"),
        ("auto", False, AVX2 | {"avx512f"}, "float32"),  # AVX-512 foundation alone is not enough
        ("auto", False, AVX2 | {"avx512_bf16"}, "bfloat16"),
        ("auto", False, AVX2 | {"amx_bf16"}, "bfloat16"),
        ("auto", False, frozenset(), "float32"),  # flags unreadable
        ("bfloat16", False, AVX2, "bfloat16"),  # an explicit choice wins
        ("float16", True, AVX2, "float16"),
    ],
)
def test_resolve_dtype(requested: str, on_gpu: bool, flags: frozenset[str], expected: str):
    assert resolve_dtype(requested, on_gpu=on_gpu, cpu_flags=flags) == expected


def test_default_is_auto_and_configurable(clean_env: pytest.MonkeyPatch):
    assert Settings().vllm_dtype == "auto"
    clean_env.setenv("PATTERNS_VLLM_DTYPE", "bfloat16")
    assert Settings().vllm_dtype == "bfloat16"
