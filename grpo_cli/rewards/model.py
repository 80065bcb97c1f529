"""Hugging Face reward models with a sequence-classification head (Skywork-Reward, ArmoRM-style
single-logit models, any `AutoModelForSequenceClassification` with one label).

The reward of a completion is the head's logit on the conversation [prompt messages, the
completion as the assistant turn], rendered with the reward model's own chat template (TRL's
RewardTrainer and OpenRLHF score that way). A reward model without a chat template scores the
policy's rendered prompt followed by the completion. Runs in the trainer's process, on its
device, in batches: a model does not belong in a worker process.
"""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


class HFRewardModel:
    def __init__(self, model: str, batch_size: int = 8, max_length: int = 4096, device: str = "auto",
                 dtype: str = "auto", trust_remote_code: bool = False):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:  # padding needs an id; the head pools the last real token
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.device = pick_device(device)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {model} has {self.model.config.num_labels} labels; a reward model has one")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length

    def text(self, prompt: str, messages, completion: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt + completion
        conversation = list(messages) if messages else [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(conversation + [{"role": "assistant", "content": completion}],
                                                  tokenize=False)

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], messages=None, **_) -> list[float]:
        messages = messages or [None] * len(prompts)
        texts = [self.text(p, m, c) for p, m, c in zip(prompts, messages, completions)]
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length, add_special_tokens=False)
            logits = self.model(**batch.to(self.device)).logits
            out.extend(logits[:, 0].float().cpu().tolist())
        return out
