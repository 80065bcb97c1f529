"""Multi-turn episodes on the shipped tiny model and the real hf sampler: the trained sequence
is the sampler's own ids with the environment's turns between them, masks are exact, the
learner's log-probs agree with the sampler's on every model turn, and scripted environments
give known turn counts and rewards."""

import functools

import pytest
import torch

from grpo_cli.environments import EpisodeSpec, Observation, episode_spec, run_episodes
from grpo_cli.environments.render import turn_ids
from grpo_cli.errors import UserError
from grpo_cli.rewards.scoring import with_environment
from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.training.logprobs import sequence_logprobs
from grpo_cli.types import Scores, Sequences

from conftest import TINY, seeds

REPLY = [{"role": "user", "content": "Again."}]


class Scripted:
    """Answers every model turn with REPLY until `done_after` model turns, then rewards 1."""

    def __init__(self, done_after: int = 99):
        self.done_after = done_after
        self.seen: list[list[dict]] = []

    def reset(self, row):
        return None

    def step(self, messages):
        self.seen.append(messages)
        turns = sum(m["role"] == "assistant" for m in messages)
        if turns >= self.done_after:
            return Observation(reward=1.0, done=True)
        return Observation(messages=REPLY)


@pytest.fixture(scope="module")
def sampler(tokenizer):
    return engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"),
                        dtype=torch.float32, batch_size=32)


def spec(tokenizer, make=Scripted, max_turns=3, max_total_tokens=0, discount=1.0):
    return EpisodeSpec(make=make, max_turns=max_turns, max_total_tokens=max_total_tokens, turn_discount=discount,
                       tokenizer=tokenizer)


PARAMS = SamplingParams(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=40)


def test_single_turn_is_the_sampler_itself(sampler, eval_prompts, tokenizer):
    batch = eval_prompts.take([0, 1, 2])
    episodes = run_episodes(sampler, batch, PARAMS, seeds(3, 3), spec(tokenizer, max_turns=1))
    drawn = sampler.generate(batch, PARAMS, seeds(3, 3))
    assert torch.equal(episodes.completion_ids, drawn.completion_ids) and episodes.completions == drawn.completions
    assert episodes.env_mask is None and torch.equal(episodes.sampler_logprobs, drawn.sampler_logprobs)


def test_episode_tokens_are_the_turns_laid_end_to_end(sampler, eval_prompts, tokenizer):
    batch = eval_prompts.take([0, 1, 2, 3])
    out = run_episodes(sampler, batch, PARAMS, seeds(4, 4), spec(tokenizer, max_turns=3, max_total_tokens=150))
    reply = turn_ids(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], REPLY)
    assert tokenizer.decode(reply) == "<|user|>Again.\n<|assistant|>"
    for i in range(len(out.completions)):
        ids, model, env = out.completion_ids[i], out.completion_mask[i].bool(), out.env_mask[i].bool()
        assert not (model & env).any()
        assert (out.sampler_logprobs[i][~model] == 0).all() and (out.sampler_logprobs[i][model] < 0).all()
        # every run of environment tokens is exactly the template's rendering of the reply
        spans = torch.nonzero(env).squeeze(-1).tolist()
        runs = [spans[j:j + len(reply)] for j in range(0, len(spans), len(reply))]
        assert all(ids[run].tolist() == reply for run in runs)
        assert len(runs) == int(out.turns[i]) - 1
        # a model turn that ends before the budget ends with EOS
        assert out.truncated[i] or ids[model][-1] == tokenizer.eos_token_id


def test_the_learner_reads_every_model_turn_as_the_sampler_drew_it(sampler, eval_prompts, tokenizer):
    out = run_episodes(sampler, eval_prompts.take(list(range(6))), PARAMS, seeds(5, 6),
                       spec(tokenizer, max_turns=3, max_total_tokens=150))
    assert int(out.turns.max()) == 3
    batch = Sequences.from_rollouts(out)
    with torch.no_grad():
        learner, _ = sequence_logprobs(sampler.model, batch, PARAMS.temperature)
    gap = (learner - out.sampler_logprobs).abs() * batch.loss_mask
    assert gap.max().item() < 1e-4
    assert torch.equal(batch.loss_mask.bool(), out.completion_mask.bool())  # environment tokens carry no loss


def test_scripted_outcomes_give_known_turns_and_rewards(sampler, eval_prompts, tokenizer):
    out = run_episodes(sampler, eval_prompts.take([0, 1]), PARAMS, seeds(6, 2),
                       spec(tokenizer, make=functools.partial(Scripted, done_after=2), max_turns=4,
                            max_total_tokens=150, discount=0.5))
    finished = ~out.truncated
    assert finished.any()
    assert (out.turns[finished] == 2).all() and (out.env_reward[finished] == 1.0).all()
    scores = with_environment(Scores(total=torch.tensor([0.0, 1.0, float("nan"), 1.0])), out)
    expected = (torch.tensor([0.0, 1.0, 0.0, 1.0]) + 1.0) * 0.5
    assert torch.allclose(scores.total[finished], expected[finished])


def test_a_budget_ends_the_episode(sampler, eval_prompts, tokenizer):
    out = run_episodes(sampler, eval_prompts.take([0, 1]), PARAMS, seeds(7, 2),
                       spec(tokenizer, max_turns=5, max_total_tokens=60))
    assert (out.attention.sum(-1) <= 60).all() and out.truncated.all()


def test_a_template_that_rewrites_earlier_turns_is_refused_at_start(make_cfg, tokenizer):
    import copy

    rewriting = copy.copy(tokenizer)
    # the last assistant turn is shown whole, earlier ones cut to their first character
    rewriting.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' and not loop.last "
                               "%}{{ m['content'][:1] }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    cfg = make_cfg("environment=feedback")
    episode_spec(cfg.environment, tokenizer)  # the shipped template only appends
    with pytest.raises(UserError, match="rewrites earlier turns"):
        episode_spec(cfg.environment, rewriting)


class Raising(Scripted):
    def step(self, messages):
        raise RuntimeError("the tool broke")


def test_a_raising_environment_ends_its_episodes_not_the_run(sampler, eval_prompts, tokenizer, capsys):
    out = run_episodes(sampler, eval_prompts.take([0, 1, 2]), PARAMS, seeds(8, 3),
                       spec(tokenizer, make=Raising, max_turns=3, max_total_tokens=150))
    assert torch.equal(out.env_failed, ~out.truncated) and out.env_failed.any() and (out.turns == 1).all()
    assert "RuntimeError: the tool broke" in capsys.readouterr().err


def test_validate_runs_the_environment_on_two_rows(tmp_path, capsys):
    from grpo_cli.cli import main

    assert main(["validate", f"output_dir={tmp_path / 'run'}", "environment=feedback"]) == 0
    assert "environment feedback (up to 2 turns): answered 2 rows" in capsys.readouterr().err
    broken = tmp_path / "env.py"
    broken.write_text("class Broken:\n    def reset(self, row):\n        return None\n"
                      "    def step(self, messages):\n        return {'done': True}\n")
    assert main(["validate", f"output_dir={tmp_path / 'run'}", "environment=feedback",
                 f"environment.name={broken}:Broken"]) == 2
    assert "step returned dict, not an Observation" in capsys.readouterr().err


USER_ENVIRONMENTS = """
import time

from grpo_cli.environments import Observation


class Hanging:
    def reset(self, row):
        return None

    def step(self, messages):
        time.sleep(60)


class SlowReset(Hanging):
    def reset(self, row):
        time.sleep(60)


class Counting:
    \"\"\"Keeps a count in its own state: it must come back from the worker with the episode.\"\"\"

    def __init__(self):
        self.steps = 0

    def reset(self, row):
        return None

    def step(self, messages):
        self.steps += 1
        return Observation(messages=[{"role": "user", "content": f"Step {self.steps}."}])
"""


def test_environment_steps_run_in_workers_under_a_time_limit(sampler, eval_prompts, tokenizer, make_cfg, tmp_path):
    (tmp_path / "envs.py").write_text(USER_ENVIRONMENTS)
    common = ["environment.max_turns=3", "environment.max_total_tokens=200", "environment.workers=2"]
    hanging = make_cfg(f"environment.name={tmp_path}/envs.py:Hanging", "environment.timeout=1", *common)
    with episode_spec(hanging.environment, tokenizer) as episodes:
        out = run_episodes(sampler, eval_prompts.take([0, 1]), PARAMS, seeds(10, 2), episodes)
    assert torch.equal(out.env_failed, ~out.truncated) and out.env_failed.any() and (out.turns == 1).all()
    slow = make_cfg(f"environment.name={tmp_path}/envs.py:SlowReset", "environment.timeout=1", *common)
    with episode_spec(slow.environment, tokenizer) as episodes:
        out = run_episodes(sampler, eval_prompts.take([0]), PARAMS, seeds(10, 1), episodes)
    assert out.env_failed.all() and (out.turns == 1).all()  # each keeps its first turn and ends there
    counting = make_cfg(f"environment.name={tmp_path}/envs.py:Counting", *common)
    with episode_spec(counting.environment, tokenizer) as episodes:
        out = run_episodes(sampler, eval_prompts.take([0, 1]), PARAMS, seeds(11, 2), episodes)
    assert int(out.turns.max()) == 3
    text = [tokenizer.decode(ids[env.bool()]) for ids, env in zip(out.completion_ids, out.env_mask)]
    for turns, said in zip(out.turns.tolist(), text):
        assert said == "".join(f"<|user|>Step {k}.\n<|assistant|>" for k in range(1, turns))


def test_halves_of_a_batch_draw_what_the_whole_does(sampler, eval_prompts, tokenizer):
    """Every turn is seeded by its prompt, its place in the group and the turn: ranks that hold
    a share of the prompts run the episodes one process would."""
    every = list(range(4))
    whole = run_episodes(sampler, eval_prompts.take(every), PARAMS, seeds(12, 4), spec(tokenizer, max_total_tokens=150))
    halves = [run_episodes(sampler, eval_prompts.take(part), PARAMS, seeds(12, 4)[part[0]:part[-1] + 1],
                           spec(tokenizer, max_total_tokens=150)) for part in (every[:2], every[2:])]
    rows = lambda out: [ids[real.bool()].tolist() for ids, real in zip(out.completion_ids, out.attention)]  # noqa: E731
    assert rows(whole) == rows(halves[0]) + rows(halves[1])
    assert int(whole.turns.max()) > 1
