"""Every file in conf/ and recipes/ composes and validates; bad keys and values fail early."""

from pathlib import Path

import pytest

from grpo_cli.compose import available_recipes, compose, config_dir, to_object
from grpo_cli.errors import ConfigError
from grpo_cli.validation import validate

from conftest import needs_smollm2

GROUPS = ["algorithm", "model", "reward", "sampler", "data", "trainer"]


def options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def case(*values, file: Path):
    """A config file as a test case. One that loads SmolLM2 (the model option and the recipes
    naming it) skips where its package is not installed, as in the quick start's environment."""
    return pytest.param(*values, marks=needs_smollm2 if "smollm2" in file.read_text() else ())


def composed(*overrides):
    return validate(to_object(compose(list(overrides))))


def test_default_is_the_embedded_recipe():
    default = composed("output_dir=x")
    embedded = composed("+recipe=embedded", "output_dir=x")
    default.recipe = embedded.recipe
    assert default == embedded
    assert default.model.name_or_path.endswith("tiny-arith")
    assert Path(default.data.path).is_file()


@pytest.mark.parametrize("group, name", [case(group, name, file=config_dir() / group / f"{name}.yaml")
                                          for group in GROUPS for name in options(group)])
def test_every_group_option_composes_and_validates(group, name):
    cfg = composed(f"{group}={name}")
    assert cfg is not None, f"{group}={name}"


@pytest.mark.parametrize("recipe", [case(name, file=file) for name, file in sorted(available_recipes().items())])
def test_every_recipe_composes_and_validates(recipe):
    cfg = composed(f"+recipe={recipe}")
    assert cfg.recipe == recipe


def test_dapo_math_recipe_values():
    cfg = composed("+recipe=dapo_math", "sampler.n=16")
    assert (cfg.algorithm.clip_eps_low, cfg.algorithm.clip_eps_high) == (0.2, 0.28)
    assert cfg.algorithm.aggregation == "token_mean" and cfg.algorithm.kl_coef == 0.0
    assert cfg.sampler.name == "vllm" and cfg.sampler.max_new_tokens == 20480
    assert cfg.algorithm.group_filter == "dynamic_sampling" and cfg.algorithm.max_sampling_rounds == 10
    overlong = [f for f in cfg.reward.functions if f.name == "overlong"]  # the recipe's, not the tiny task's
    assert [(f.kwargs["max_length"], f.kwargs["cache_length"]) for f in overlong] == [(20480, 4096)]


def test_an_algorithm_can_pick_its_reward_and_the_command_line_wins():
    assert [f.name for f in composed("algorithm=dapo").reward.functions] == ["final_answer", "overlong"]
    assert [f.name for f in composed("algorithm=dapo", "reward=arithmetic").reward.functions] == ["final_answer"]


def test_user_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /algorithm: grpo\n"
                                        "recipe: mine\ntrainer:\n  steps: 7\n")
    monkeypatch.setenv("GRPO_RECIPE_PATH", str(tmp_path))
    assert composed("+recipe=mine").trainer.steps == 7


@pytest.mark.parametrize("override, fragment", [
    ("trainer.stepz=3", "stepz"),
    ("+trainer.stepz=3", "stepz"),
    ("trainer.steps=abc", "trainer.steps"),
    ("algorithm=nope", "available: cispo, dapo, dpo, dr_grpo, gfpo"),
    ("algorithm=gfpo algorithm.gfpo.k=9", "gfpo.k=9"),
    ("+recipe=nope", "available: dapo_math, dapo_math_1gpu, dpo, dr_grpo_math, embedded, embedded_feedback, embedded_tools, embedded_verbose, gr_dpo, gsm8k, gsm8k_cpu, gspo"),
    ("sampler.n=1", "sampler.n=1"),
    ("trainer.lr=-1", "trainer.lr"),
    ("trainer.max_staleness=-1", "trainer.max_staleness=-1 must be >= 0"),
    ("sampler.threads=-2", "sampler.threads=-2 must be >= 0"),
    ("algorithm.clip_eps_low=1.5", "clip_eps_low"),
    ("algorithm.advantage=foo", "valid: dr_grpo, grpo"),
    ("sampler.name=sglang", "valid: hf, vllm"),
    ("reward.functions=[{name:nope}]", "reward.functions[0].name"),
    ("reward.functions=[{name:overlong,kwargs:{max_length:10}}]", "reward.functions[0].kwargs for overlong"),
    ("reward.functions=[{name:overlong,kwargs:{max_length:10,cache_length:20}}]", "cache_length <= max_length"),
    ("algorithm.mini_batches=3", "mini_batches"),
    # every mode's valid values come from the registry that implements it
    ("algorithm.kl_in=both", "valid: loss, reward"),
    ("trainer.schedule=step", "valid: constant, cosine, linear"),
    ("algorithm.correction_level=batch", "valid: sequence, token"),
    ("algorithm=gfpo algorithm.gfpo.metric=reward", "valid: length, token_efficiency"),
    ("algorithm=gfpo algorithm.gfpo.rejected=keep", "valid: drop, zero_adv"),
    ("algorithm.objective=sft", "valid: preference, rl"),
    ("device=tpu", "valid: auto, cpu, cuda"),
    ("model.dtype=int8", "valid: bfloat16, float16, float32"),
    # keys that moved into a block say where they went
    ("algorithm=gfpo algorithm.gfpo_k=4", "algorithm.gfpo_k is now algorithm.gfpo.k"),
    ("algorithm=gr_dpo algorithm.eta_alpha=0.1", "algorithm.eta_alpha is now algorithm.preference.eta_alpha"),
    # the preference objective has its reference in the margin; a KL term would load a second one
    ("algorithm=dpo algorithm.kl_coef=0.04", "set algorithm.kl_coef=0"),
])
def test_bad_config_names_the_key(override, fragment):
    with pytest.raises(ConfigError) as error:
        composed(*override.split(" "))
    message = str(error.value)
    assert fragment in message
    assert "\n" not in message


def test_relative_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    cfg = composed("output_dir=runs/a", "data.path=rows.jsonl")
    assert cfg.output_dir == str(tmp_path / "runs" / "a")
    assert cfg.data.path == str(tmp_path / "rows.jsonl")
