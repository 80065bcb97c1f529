"""Asynchronous generation (trainer.max_staleness > 0): the importance weights of a batch
sampled one version behind against a hand computation, the staleness bound, the first step
equal to the synchronous one, refills and GFPO, SIGTERM and resume."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from grpo_cli.algorithms.rl_loss import RLLoss
from grpo_cli.cli import main
from grpo_cli.sampler import SamplingParams
from grpo_cli.sampler.hf import HFSampler
from grpo_cli.training.rollout_worker import fresh_enough
from grpo_cli.training.runtime import load_tokenizer
from grpo_cli.types import BatchLogprobs, Rollouts, Sequences, TrainBatch

from conftest import TINY, rl_learner, seeds

SMALL = ["trainer.eval_every=0", "eval.num_prompts=8", "trainer.prompts_per_step=4"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def hand_logprobs(model, rollouts: Rollouts, temperature: float) -> list[list[float]]:
    """ℓ of each completion token, one unpadded sequence at a time."""
    out = []
    for i in range(len(rollouts.completions)):
        prompt = rollouts.prompt_ids[i][rollouts.prompt_mask[i].bool()]
        completion = rollouts.completion_ids[i][rollouts.completion_mask[i].bool()]
        with torch.no_grad():
            logits = model(torch.cat([prompt, completion])[None]).logits[0].double()
        rows = logits[len(prompt) - 1:len(prompt) - 1 + len(completion)] / temperature
        out.append(rows.log_softmax(-1).gather(-1, completion[:, None]).squeeze(-1).tolist())
    return out


def test_importance_weights_of_a_batch_one_version_behind(make_cfg, eval_prompts):
    cfg = make_cfg("trainer.lr=3e-3", "algorithm.correction=tis", "algorithm.correction_max=1.05",
                   "algorithm.kl_coef=0")
    tokenizer = load_tokenizer(TINY)
    sampler = HFSampler(TINY, tokenizer, torch.device("cpu"), torch.float32, batch_size=64)
    params = SamplingParams(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=24)
    stale = sampler.generate(eval_prompts.take(list(range(4))), params, seeds(3, 4))  # version 0
    learner = rl_learner(cfg)
    fresh = sampler.generate(eval_prompts.take(list(range(4, 8))), params, seeds(4, 4))
    sequences = Sequences.from_rollouts(fresh)
    advantages = torch.linspace(-1, 1, len(sequences))[:, None] * sequences.loss_mask
    learner.update(TrainBatch.assemble(sequences, advantages, BatchLogprobs()), 0, RLLoss.of(cfg))  # now version 1

    sequences = Sequences.from_rollouts(stale)
    sequences.policy_lag = 1 - stale.policy_version
    advantages = torch.linspace(1, -1, len(sequences))[:, None] * sequences.loss_mask
    old = hand_logprobs(learner.model, stale, params.temperature)  # π_old: the learner before this update
    metrics = learner.update(TrainBatch.assemble(sequences, advantages, BatchLogprobs()), 0, RLLoss.of(cfg))

    weights, per_sequence_loss, capped = [], [], 0
    for i, row in enumerate(old):
        w = [float(torch.tensor(lo - stale.sampler_logprobs[i, t].item(), dtype=torch.float64).exp())
             for t, lo in enumerate(row)]
        weights += w
        capped += sum(x > 1.05 for x in w)
        # ρ = 1 (μ = 1), so the clipped surrogate is -A, weighted by TIS's min(w, C)
        per_sequence_loss.append(sum(-advantages[i, t].item() * min(x, 1.05) for t, x in enumerate(w)) / len(w))
    assert max(abs(torch.tensor(weights).log())) > 0.05  # the update moved the policy off the sampler's
    assert metrics["offpolicy/is_weight_mean"] == pytest.approx(sum(weights) / len(weights), abs=1e-5)
    assert metrics["offpolicy/lag1/is_weight_mean"] == pytest.approx(sum(weights) / len(weights), abs=1e-5)
    assert metrics["offpolicy/is_weight_max"] == pytest.approx(max(weights), rel=1e-5)
    assert metrics["offpolicy/corrected_fraction"] == pytest.approx(capped / len(weights), abs=1e-7)
    assert metrics["loss/policy"] == pytest.approx(sum(per_sequence_loss) / len(old), abs=1e-5)


def test_a_batch_older_than_the_bound_is_not_fresh():
    versions = torch.tensor([3, 3, 4, 4])
    rollouts = Rollouts(*(torch.zeros(4, 1, dtype=torch.long),) * 4, torch.zeros(4, 1), torch.zeros(4, dtype=torch.bool),
                        torch.tensor([0, 0, 1, 1]), [""] * 4, versions)
    assert fresh_enough(rollouts, learner_version=5, max_staleness=2)
    assert not fresh_enough(rollouts, learner_version=6, max_staleness=2)  # rows of version 3 are 3 behind
    assert fresh_enough(rollouts, learner_version=4, max_staleness=0) is False


@pytest.mark.slow
def test_first_step_equals_the_synchronous_one_and_no_batch_is_older_than_the_bound(tmp_path):
    """Batch j walks the data as step j does, so the first step (nothing to be stale yet) is the
    synchronous one; after it batches run ahead, but never more than max_staleness versions."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the same single-thread arithmetic as the sampler process
        assert main(["train", f"output_dir={tmp_path / 'sync'}", "trainer.steps=2", *SMALL]) == 0
        torch.set_num_threads(2)  # one for the learner, one for the sampler
        assert main(["train", f"output_dir={tmp_path / 'async'}", "trainer.steps=5", "trainer.max_staleness=2",
                     "sampler.threads=1", *SMALL]) == 0
    finally:
        torch.set_num_threads(threads)
    sync, lagged = records(tmp_path / "sync"), records(tmp_path / "async")
    assert lagged[0]["eval/accuracy"] == sync[0]["eval/accuracy"]
    for key in ("reward/mean", "completion/mean_length", "loss"):
        assert lagged[1][key] == pytest.approx(sync[1][key], abs=1e-6), key
    lags = [r["async/lag_max"] for r in lagged[1:]]
    assert lags[0] == 0 and max(lags) <= 2
    assert max(lags) >= 1  # the sampler ran ahead: batches 2 and 3 were generated before step 1 ended
    for r in lagged[1:]:
        assert r["step"] - 1 - r["sampler/policy_version"] <= 2  # the learner is at version step − 1
        lag = int(r["async/lag_max"])
        if lag:
            assert r[f"offpolicy/lag{lag}/is_weight_mean"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["dapo", "gfpo"])
def test_refills_and_gfpo_train_ahead(tmp_path, algorithm):
    run_dir = tmp_path / "run"
    extra = ["algorithm.max_sampling_rounds=3"] if algorithm == "dapo" else []
    assert main(["train", f"output_dir={run_dir}", f"algorithm={algorithm}", "trainer.steps=4",
                 "trainer.max_staleness=1", *extra, *SMALL]) == 0
    steps = records(run_dir)[1:]
    assert all(r["async/lag_max"] <= 1 for r in steps)
    if algorithm == "dapo":
        assert sum(r["sampling/rounds"] for r in steps) > len(steps)  # refills came from the batches ahead
    state = torch.load(run_dir / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=False)
    assert state["batches_taken"] == sum(r["sampling/rounds"] for r in steps)


@pytest.mark.slow
def test_sigterm_stops_both_processes_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["trainer.steps=6", "trainer.save_every=2", "trainer.max_staleness=1", *SMALL]
    process = subprocess.Popen([sys.executable, "-m", "grpo_cli", "train", f"output_dir={run_dir}", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() or len((run_dir / "metrics.jsonl").read_text().splitlines()) < 3:
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    children = psutil.Process(process.pid).children(recursive=True)
    assert any(c.name() == "grpo-sampler" or "spawn" in " ".join(c.cmdline()) for c in children)
    process.send_signal(signal.SIGTERM)  # to the main process only: it must stop the sampler itself
    assert process.wait(120) == 128 + signal.SIGTERM
    assert "resume with" in process.stderr.read()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    stopped_at = len(records(run_dir)) - 1
    assert (run_dir / "checkpoints" / f"step_{stopped_at}").is_dir()
    assert main(["train", f"output_dir={run_dir}", "resume=auto", *args]) == 0
    resumed = records(run_dir)
    assert [r["step"] for r in resumed] == list(range(7))
    assert all(r["async/lag_max"] <= 1 for r in resumed[1:])
    assert resumed[stopped_at + 1]["async/lag_max"] == 0  # what was in flight was generated again
