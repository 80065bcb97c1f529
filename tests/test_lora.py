"""LoRA through PEFT on the tiny model: the merge matches PEFT's own, the pushed weights
make the sampler score a sequence as the learner does, the reference is the base model, only
the adapters move, and a checkpoint's adapters come back on resume."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_cli.algorithms.rl_loss import RLLoss
from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.training.logprobs import sequence_logprobs

from conftest import TINY, rl_learner, seeds, train_batch
from test_config import composed


@pytest.fixture(scope="module")
def sampler(tokenizer):
    return engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"), dtype=torch.float32, batch_size=64)


def lora_learner(make_cfg, *overrides):
    cfg = make_cfg("model.lora.rank=4", "model.lora.alpha=8", "trainer.lr=1e-2", *overrides)
    return rl_learner(cfg)


def trained_batch(learner, sampler, eval_prompts):
    rollouts = sampler.generate(eval_prompts.take(list(range(4))), SamplingParams(4, 1.0, 1.0, 0, 40), seeds=seeds(1, 4))
    batch = train_batch(learner, rollouts)
    batch.advantages = torch.randn(len(batch), 1, generator=torch.Generator().manual_seed(0)) * batch.loss_mask
    return batch


def test_merge_equals_peft_merge_and_unload(make_cfg):
    learner = lora_learner(make_cfg)
    for name, parameter in learner.model.named_parameters():
        if "lora_B" in name:  # B starts at 0: give the delta something to show
            parameter.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    ours = learner.weights()
    theirs = learner.model.merge_and_unload().state_dict()
    assert ours.keys() == theirs.keys()
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-6


def test_only_adapters_move_and_the_push_matches_the_learner(make_cfg, sampler, eval_prompts):
    learner = lora_learner(make_cfg, "algorithm.kl_coef=0.04")
    base = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(TINY).state_dict().items()}
    batch = trained_batch(learner, sampler, eval_prompts)
    assert learner.reference is None  # the adapters switched off stand in for it
    for _ in range(3):
        learner.optimizer_step(batch, RLLoss.of(learner.cfg))
    adapted = {n: p for n, p in learner.model.named_parameters() if "lora_" in n}
    assert all(p.requires_grad for p in adapted.values())
    assert any(float(p.detach().abs().max()) > 0 for n, p in adapted.items() if "lora_B" in n)
    frozen = {n.removeprefix("base_model.model.").replace(".base_layer.", "."): p
              for n, p in learner.model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(p, base[n]) for n, p in frozen.items())
    merged = learner.weights()
    assert max(float((merged[k] - base[k]).abs().max()) for k in base) > 1e-4
    sampler.load_weights(merged, version=1)
    micro = batch.to(learner.device)
    policy = sequence_logprobs(learner.model, micro, 1.0)[0].detach() * batch.loss_mask
    pushed = sequence_logprobs(sampler.model, micro, 1.0)[0] * batch.loss_mask
    assert (policy - pushed).abs().max() < 1e-4
    reference = learner.reference_logprobs(batch)
    base_model = AutoModelForCausalLM.from_pretrained(TINY)
    assert (reference - sequence_logprobs(base_model, micro, 1.0)[0] * batch.loss_mask).abs().max() < 1e-5
    sampler.load_weights(base, version=0)


def test_a_lora_run_checkpoints_merged_weights_and_resumes_its_adapters(tmp_path):
    from grpo_cli.cli import main

    run = ["model.lora.rank=4", "trainer.prompts_per_step=4", "sampler.n=4", "trainer.eval_every=0",
           "eval.num_prompts=8", f"output_dir={tmp_path / 'run'}"]
    assert main(["train", *run, "trainer.steps=2", "trainer.save_every=1"]) == 0
    step = tmp_path / "run/checkpoints/step_2"
    assert (step / "adapter/adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(step)  # what grpo eval loads: no PEFT needed
    assert not any("lora" in k for k in merged.state_dict())
    cfg_overrides = [*run, "trainer.steps=3", "resume=auto"]
    learner = rl_learner(composed(*cfg_overrides), total_optimizer_steps=3, policy_path=str(step))
    resumed = learner.weights()
    assert max(float((resumed[k] - v).abs().max()) for k, v in merged.state_dict().items()) < 1e-6
    assert main(["train", *cfg_overrides]) == 0
