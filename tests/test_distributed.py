"""torchrun on the CPU (gloo): two ranks, each sampling half of the prompts and training on
half of every mini-batch under FSDP2, must log what one process logs for the same global batch.
The cases cover the global statistics the ranks must share: the KL reference and μ = 2
(ℓ_old recomputed, ratios off 1), DAPO's dynamic sampling with an odd number of prompts
(uneven shares) and micro-batches by token budget (uneven micro-batch counts), and
REINFORCE++'s batch-wide advantage normalisation, LoRA (adapters sharded, the reference
being the adapters switched off, merged weights pushed and saved), and two-turn episodes with
text feedback (each rank runs the episodes of its prompts)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

COMMON = ["trainer.steps=5", "trainer.eval_every=0", "eval.num_prompts=8", "sampler.n=4"]
CASES = {
    "grpo_kl_two_epochs": ["trainer.prompts_per_step=4", "algorithm.epochs=2"],
    "dapo_uneven": ["algorithm=dapo", "trainer.prompts_per_step=5", "trainer.micro_batch_tokens=300"],
    "reinforce_pp": ["algorithm=reinforce_pp", "trainer.prompts_per_step=4", "algorithm.mini_batches=2"],
    "lora": ["model.lora.rank=4", "trainer.lr=3e-3", "trainer.prompts_per_step=4", "algorithm.epochs=2"],
    "feedback": ["environment=feedback", "environment.max_total_tokens=160", "environment.workers=1",
                 "trainer.prompts_per_step=4"],
}


def train(run_dir, processes: int, overrides: list[str]) -> list[dict]:
    args = ["-m", "grpo_cli", "train", f"output_dir={run_dir}", *COMMON, *overrides]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, 2 // processes)))
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_log_what_one_process_logs(tmp_path, case):
    one = train(tmp_path / "one", 1, CASES[case])
    two = train(tmp_path / "two", 2, CASES[case])
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(6))
    for a, b in zip(one[1:], two[1:]):
        assert b["reward/mean"] == a["reward/mean"]  # the same completions were drawn
        assert b["sampling/rounds"] == a["sampling/rounds"]
        assert abs(b["loss"] - a["loss"]) < 1e-5, (a["step"], a["loss"], b["loss"])
        assert abs(b["grad_norm"] - a["grad_norm"]) <= 1e-4 * max(1.0, a["grad_norm"])
        assert abs(b["entropy"] - a["entropy"]) < 1e-5
    assert two[-1]["eval/accuracy"] == one[-1]["eval/accuracy"]
    weights = [load_file(tmp_path / name / "checkpoints/step_5/model.safetensors") for name in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) < 1e-5


def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    """The optimizer state is saved in the single-process layout whatever the number of ranks."""
    train(tmp_path / "run", 2, ["trainer.prompts_per_step=4", "trainer.steps=4", "trainer.save_every=2"])
    state = torch.load(tmp_path / "run/checkpoints/step_4/trainer_state.pt", weights_only=False)
    assert sorted(state["learner"]["optimizer"]["state"]) == list(range(len(state["learner"]["optimizer"]["state"])))
    resumed = train(tmp_path / "run", 1, ["trainer.prompts_per_step=4", "trainer.steps=6", "resume=auto"])
    assert [r["step"] for r in resumed] == list(range(7))
