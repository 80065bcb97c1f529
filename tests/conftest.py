"""Shared fixtures: the real shipped tiny model and its tokenizer, never a mock."""

import pytest
import torch

from grpo_cli.compose import compose, to_object
from grpo_cli.config import ASSETS_DIR, validate

TINY = str(ASSETS_DIR / "tiny-arith")


def seeds(base: int, count: int) -> list[int]:
    """One sampling seed per prompt."""
    return [base * 1000 + i for i in range(count)]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    from grpo_cli.runtime import load_tokenizer

    return load_tokenizer(TINY)


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides):
        return validate(to_object(compose([f"output_dir={tmp_path / 'run'}", *overrides])))

    return make


@pytest.fixture(scope="session")
def eval_prompts(tokenizer):
    from grpo_cli.data import load_prompts

    cfg = validate(to_object(compose(["output_dir=unused"])))
    return load_prompts(cfg.data.eval_path, "test", cfg.data, tokenizer, limit=24)
