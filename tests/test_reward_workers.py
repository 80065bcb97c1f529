"""User reward functions in worker processes: raising and hanging rows cost only their reward."""

import math

import pytest

from grpo_cli.config import RewardConfig, RewardFunctionConfig
from grpo_cli.errors import ConfigError
from grpo_cli.rewards.scoring import RewardSet

USER_REWARDS = '''
import asyncio
import time


def flaky(prompts, completions, answer, **columns):
    """Raises on rows whose answer ends in 0, hangs on 'hang', else the completion length."""
    out = []
    for completion, ref in zip(completions, answer):
        if ref.endswith("0"):
            raise ValueError(f"cannot score answer {ref}")
        if completion == "hang":
            time.sleep(60)
        out.append(float(len(completion)) + columns["bonus"][0] * 0)
    return out


async def judge(prompts, completions, **_):
    if completions[0] == "hang":
        await asyncio.sleep(60)
    if completions[0] == "raise":
        raise RuntimeError("judge unavailable")
    await asyncio.sleep(0.01)
    return [0.5]


def wrong_count(prompts, completions, **_):
    return [1.0]
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_REWARDS)
    return path


def rows(n: int):
    completions = ["hang" if i in (3, 17) else f"ok {i}" for i in range(n)]
    answers = [str(i) for i in range(n)]
    return ["p"] * n, completions, {"answer": answers, "bonus": [1] * n}


@pytest.mark.parametrize("workers", [2, 0])
def test_raising_rows_lose_their_reward_and_nothing_else(user_file, workers):
    prompts, completions, columns = rows(40)
    if workers == 0:  # in-process has no time limit: leave the hanging rows out
        completions = [c.replace("hang", "ok") for c in completions]
    cfg = RewardConfig(functions=[RewardFunctionConfig(f"{user_file}:flaky", 1.0, {})],
                       workers=workers, timeout=1.0, rows_per_call=16)
    with RewardSet(cfg) as rewards:
        scores = rewards.score_texts(prompts, completions, columns)
        report = rewards.reports["flaky"]
    expected_failed = [i % 10 == 0 or (workers and i in (3, 17)) for i in range(40)]
    assert scores.failed["flaky"].tolist() == expected_failed
    for i, value in enumerate(scores.components["flaky"].tolist()):
        assert math.isnan(value) if expected_failed[i] else value == len(completions[i])
    assert report.errors == sum(expected_failed)
    assert report.first_error.startswith("ValueError: cannot score answer") or "timed out" in report.first_error


def test_async_rows_run_concurrently_and_fail_alone(user_file):
    completions = ["fine"] * 30 + ["hang", "raise"]
    cfg = RewardConfig(functions=[RewardFunctionConfig(f"{user_file}:judge", 1.0, {})], timeout=1.0)
    with RewardSet(cfg) as rewards:
        scores = rewards.score_texts(["p"] * 32, completions, {})
        report = rewards.reports["judge"]
    assert scores.components["judge"][:30].tolist() == [0.5] * 30
    assert scores.failed["judge"].tolist() == [False] * 30 + [True, True]
    assert report.first_error in ("timed out after 1s", "RuntimeError: judge unavailable")


def test_a_batch_answer_of_the_wrong_length_is_retried_row_by_row(user_file):
    cfg = RewardConfig(functions=[RewardFunctionConfig(f"{user_file}:wrong_count", 1.0, {})], workers=0)
    scores = RewardSet(cfg).score_texts(["p"] * 3, ["a", "b", "c"], {})
    # Row by row the function returns one value per row, which is right.
    assert scores.components["wrong_count"].tolist() == [1.0, 1.0, 1.0]
    assert not scores.failed["wrong_count"].any()


@pytest.mark.parametrize("name, fragment", [
    ("missing_file.py:fn", "file missing_file.py does not exist"),
    ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
    ("json:no_such_function", "json has no function 'no_such_function'"),
    ("nope", "reward.functions[0].name='nope' is not a reward"),
])
def test_bad_reward_names_fail_at_config_time(name, fragment):
    from grpo_cli.validation import validate_rewards

    with pytest.raises(ConfigError, match=None) as error:
        validate_rewards(RewardConfig(functions=[RewardFunctionConfig(name, 1.0, {})]))
    assert fragment in str(error.value)


EXITING = '''
import sys


def quits(prompts, completions, **_):
    sys.exit(3)


async def quits_async(prompts, completions, **_):
    sys.exit(6)
'''


@pytest.mark.parametrize("function, code", [("quits", 3), ("quits_async", 6)])
@pytest.mark.parametrize("workers", [2, 0])
def test_a_reward_that_calls_sys_exit_fails_its_rows_and_not_the_trainer(tmp_path, function, code, workers):
    path = tmp_path / "exiting.py"
    path.write_text(EXITING)
    cfg = RewardConfig(functions=[RewardFunctionConfig(f"{path}:{function}", 1.0, {})], workers=workers, timeout=5)
    with RewardSet(cfg) as rewards:
        scores = rewards.score_texts(["p", "p"], ["a", "b"], {})
        report = rewards.reports[function]
    assert all(math.isnan(v) for v in scores.total.tolist())
    assert report.errors == 2 and f"called sys.exit({code})" in report.first_error


@pytest.mark.parametrize("body, fragment", [
    ("import sys\nsys.exit(4)\n", "called sys.exit(4) when imported"),
    ("import os\nos._exit(5)\n", "ended its process with exit status 5"),
])
def test_a_reward_module_that_exits_on_import_is_a_config_error(tmp_path, body, fragment):
    from grpo_cli.validation import validate_rewards

    path = tmp_path / "exits_on_import.py"
    path.write_text(body + "\ndef reward(prompts, completions, **_):\n    return [1.0] * len(completions)\n")
    with pytest.raises(ConfigError) as error:
        validate_rewards(RewardConfig(functions=[RewardFunctionConfig(f"{path}:reward", 1.0, {})]))
    assert fragment in str(error.value) and "\n" not in str(error.value)
