"""LoRA through PEFT (Hu et al. 2021, arXiv 2106.09685): the policy trains low-rank adapters
on its linear layers while the base weights stay frozen.

As TRL does, the reference policy is the same model with its adapters switched off, so a KL
term costs no second copy of the weights. The sampler and the checkpoints get merged weights,
W + (α/r)·B·A, under the base model's own parameter names; we compute them from a state dict
rather than with PEFT's merge_adapter / unmerge_adapter, which round the base weights twice
per push in bf16 and would drift them over a run, and so that the same code merges the
gathered weights of an FSDP-sharded policy. Adapters are saved beside each checkpoint
(`adapter/`) and a resumed run loads them onto the base model again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from grpo_cli import config
from grpo_cli.run_folder.layout import ADAPTER_DIR


def attach(model, lora_cfg: config.LoraConfig, adapter_from: str | None = None):
    """The PEFT model: the saved adapters from `adapter_from` (a checkpoint) when given, else
    fresh ones (B = 0, so the policy starts equal to the base)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    saved = Path(adapter_from) / ADAPTER_DIR if adapter_from else None
    if saved is not None and saved.is_dir():
        return PeftModel.from_pretrained(model, saved, is_trainable=True)
    config = LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=0.0,
                        target_modules=list(lora_cfg.target_modules) if not isinstance(lora_cfg.target_modules, str)
                        else lora_cfg.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def scalings(peft_model) -> dict[str, float]:
    """Module path (as in the state dict) -> α/r of its active adapter."""
    from peft.tuners.lora import LoraLayer

    return {name: module.scaling[module.active_adapters[0]]
            for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)}


def merge(state: dict[str, torch.Tensor], scaling: dict[str, float], adapter: str = "default") -> dict[str, torch.Tensor]:
    """A PEFT model's state dict -> the base model's, every adapted weight W + scaling·B·A.

    state: PEFT names (`base_model.model.<path>.base_layer.weight`, `<path>.lora_A.default.weight`
    [r, in], `<path>.lora_B.default.weight` [out, r]); returns base names (`<path>.weight`)."""
    out = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        if name.endswith(".base_layer.weight"):
            path = name.removesuffix(".base_layer.weight")
            a, b = state[f"{path}.lora_A.{adapter}.weight"], state[f"{path}.lora_B.{adapter}.weight"]
            delta = (b.float() @ a.float()) * scaling[path]
            tensor = (tensor.float() + delta).to(tensor.dtype)
        out[name.removeprefix("base_model.model.").replace(".base_layer.", ".")] = tensor.detach()
    return out
