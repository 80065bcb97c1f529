"""Held-out evaluation: accuracy (mean@k) and the unbiased pass@k.

pass@k follows Chen et al. 2021 (arXiv 2107.03374): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), computed as a product to stay finite. Here the number of
samples per prompt equals k, so pass@k is the share of prompts with any correct sample; the
general form is kept so that more samples than k can be drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from grpo_cli.data import PromptSet
from grpo_cli.environments import EpisodeSpec, run_episodes
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.sampler import SamplingParams, prompt_seeds


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased estimator of P(at least one of k draws is correct)."""
    if num_samples - num_correct < k:
        return 1.0
    miss = 1.0
    for i in range(num_samples - num_correct + 1, num_samples + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


@dataclass
class EvalResult:
    accuracy: float  # mean over prompts of the mean correctness of its k samples
    pass_at_k: float
    k: int
    n: int  # prompts
    mean_reward: float
    mean_length: float
    truncated_fraction: float
    tool_call_rate: float | None = None  # with tools: the share of episodes that called one
    tool_ok_rate: float | None = None  # the share of calls that ran and answered

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def record(self) -> dict[str, float]:
        """The figures as metrics.jsonl keys."""
        return {f"eval/{k}": v for k, v in self.to_dict().items()}


@dataclass
class EvalSamples:
    """What each prompt's samples did; the shares of several ranks concatenate."""

    correct: list[int]  # correct samples per prompt
    rewards: list[float]  # per completion; NaN where no reward had an opinion
    lengths: list[int]
    truncated: list[bool]
    tool_stats: list[list[int]] = field(default_factory=list)  # per completion: calls, failed, timed out

    @staticmethod
    def merge(parts: list["EvalSamples"]) -> "EvalSamples":
        return EvalSamples(*(sum((getattr(p, f.name) for p in parts), []) for f in fields(EvalSamples)))

    def summary(self, k: int) -> EvalResult:
        tools = torch.tensor(self.tool_stats).view(-1, 3)
        calls = int(tools[:, 0].sum())
        return EvalResult(
            accuracy=sum(self.correct) / (len(self.correct) * k),
            pass_at_k=sum(pass_at_k(k, c, k) for c in self.correct) / len(self.correct),
            k=k,
            n=len(self.correct),
            mean_reward=float(torch.tensor(self.rewards).nanmean()),
            mean_length=float(torch.tensor(self.lengths, dtype=torch.float).mean()),
            truncated_fraction=float(torch.tensor(self.truncated, dtype=torch.float).mean()),
            tool_call_rate=float((tools[:, 0] > 0).float().mean()) if self.tool_stats else None,
            tool_ok_rate=(calls - int(tools[:, 1:].sum())) / calls if calls else None,
        )


def sample_and_score(sampler, prompts: PromptSet, rewards: RewardSet, params: SamplingParams, seed: int,
                     rows: range, episodes: EpisodeSpec, prompts_per_call: int = 64) -> EvalSamples:
    """params.n completions for each prompt in `rows`; prompt i's seed depends on (seed, i)
    only, so a share of the rows draws what the whole would."""
    out = EvalSamples([], [], [], [])
    for start in range(rows.start, rows.stop, prompts_per_call):
        index = list(range(start, min(start + prompts_per_call, rows.stop)))
        batch = prompts.take(index)
        rollouts = run_episodes(sampler, batch, params, prompt_seeds(seed, index), episodes)
        scores = rewards.score(batch, rollouts, steps=False)
        out.correct += scores.correct.view(len(batch), params.n).sum(-1).tolist()
        out.rewards += scores.total.tolist()
        out.lengths += rollouts.completion_lengths.tolist()
        out.truncated += rollouts.truncated.tolist()
        out.tool_stats += rollouts.tool_stats.tolist() if rollouts.tool_stats is not None else []
    return out


def evaluate(sampler, prompts: PromptSet, rewards: RewardSet, params: SamplingParams, seed: int,
             episodes: EpisodeSpec) -> EvalResult:
    """Sample params.n completions (episodes) for every prompt and score them."""
    return sample_and_score(sampler, prompts, rewards, params, seed, range(len(prompts)), episodes).summary(params.n)
