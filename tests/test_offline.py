"""The offline preference run on the shipped tiny model and the embedded pairs: batch layout,
micro-batches that give the step of one pass, α checkpointed and resumed, errors."""

import json

import pytest
import torch

from grpo_cli.cli import main
from grpo_cli.training import offline
from grpo_cli.training.logprobs import sequence_logprobs

from test_config import composed

PAIRS = ["data=arithmetic_pairs", "trainer.prompts_per_step=8", "trainer.eval_every=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = composed(f"output_dir={tmp_path_factory.mktemp('run')}", "algorithm=gr_dpo", *PAIRS)
    return offline.build(cfg, cfg.model.name_or_path)


def test_pair_batch_puts_chosen_then_rejected_and_masks_the_responses(run):
    batch = offline.pair_batch(run.train, [0, 1, 2], run.tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 6
    assert batch.loss_mask.sum(-1).tolist() == [len(run.train.chosen_ids[i]) for i in range(3)] + \
        [len(run.train.rejected_ids[i]) for i in range(3)]
    one = offline.pair_batch(run.train, [1], run.tokenizer.pad_token_id)
    direct = (sequence_logprobs(run.learner.model, one, 1.0)[0] * one.loss_mask).sum(-1)
    many = offline.sums_of(run.learner, run.learner.model, run.train, [0, 1, 2], run.tokenizer.pad_token_id)
    assert many[1].tolist() == pytest.approx(direct.tolist(), abs=1e-4)
    assert torch.allclose(run.ref_train[:3], many, atol=1e-4)  # the policy has not moved yet: it is the reference
    assert run.learner.reference is None  # its sums are cached; the model itself is freed


def step_result(tmp_path, micro_batch_size):
    cfg = composed(f"output_dir={tmp_path}", "algorithm=gr_dpo", *PAIRS, f"trainer.micro_batch_size={micro_batch_size}")
    run = offline.build(cfg, cfg.model.name_or_path)
    metrics = offline.preference_step(run, 0)
    return run, metrics


def test_micro_batches_take_the_step_of_one_pass(tmp_path):
    """With micro-batches α comes from a gradient-free first pass; the step is the same."""
    whole, whole_metrics = step_result(tmp_path / "a", 16)
    split, split_metrics = step_result(tmp_path / "b", 4)
    assert torch.allclose(whole.state.alpha, split.state.alpha, atol=1e-6)
    assert whole_metrics["loss/total"] == pytest.approx(split_metrics["loss/total"], abs=1e-6)
    assert whole_metrics["grad_norm"] == pytest.approx(split_metrics["grad_norm"], rel=1e-4)
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(whole.learner.model.parameters(), split.learner.model.parameters()))
    assert moved < 1e-5


def observed_step(tmp_path, *overrides):
    """A GR-DPO step's metrics, its gradient (before the optimizer takes it) and the largest
    tensors the model made: its input (rows x width) and the output layer's logits."""
    cfg = composed(f"output_dir={tmp_path}", "algorithm=gr_dpo", *PAIRS, *overrides)
    run = offline.build(cfg, cfg.model.name_or_path)
    model, largest, grads = run.learner.model, {"input": 0, "logits": 0}, {}
    model.register_forward_pre_hook(lambda _, args, kwargs: largest.update(
        input=max(largest["input"], kwargs["input_ids"].numel())), with_kwargs=True)
    model.lm_head.register_forward_hook(lambda _, args, out: largest.update(logits=max(largest["logits"], out.numel())))
    apply_gradients = run.learner.apply_gradients

    def keep_gradient(*args, **kwargs):
        grads.update({name: p.grad.clone() for name, p in model.named_parameters()})
        return apply_gradients(*args, **kwargs)

    run.learner.apply_gradients = keep_gradient
    return offline.preference_step(run, 0), grads, largest


@pytest.mark.parametrize("setting, shrinks", [("trainer.logprob_chunk=4", "logits"),
                                              ("trainer.micro_batch_tokens=200", "input")])
def test_the_preference_step_goes_through_the_learners_batching(tmp_path, setting, shrinks):
    """trainer.logprob_chunk and trainer.micro_batch_tokens apply to the preference objective:
    each shrinks the largest tensor it governs and leaves the loss and the gradient as they were."""
    plain, plain_grads, plain_largest = observed_step(tmp_path / "plain")
    other, other_grads, other_largest = observed_step(tmp_path / "other", setting)
    assert other_largest[shrinks] < plain_largest[shrinks] / 2
    assert other["loss/total"] == pytest.approx(plain["loss/total"], abs=1e-6)
    assert other["rewards/margin"] == pytest.approx(plain["rewards/margin"], abs=1e-6)  # ~0 at step 0: the policy is the reference
    for name, grad in plain_grads.items():
        assert torch.allclose(other_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_gr_dpo_logs_alpha_checkpoints_it_and_resumes(tmp_path):
    args = ["train", "algorithm=gr_dpo", *PAIRS, f"output_dir={tmp_path / 'run'}", "trainer.save_every=2"]
    assert main([*args, "trainer.steps=4"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    alphas = [{k: v for k, v in r.items() if k.startswith("alpha/")} for r in records]
    assert all(sum(a.values()) == pytest.approx(1.0) and len(a) == 3 for a in alphas)
    assert alphas[-1]["alpha/long"] > 1 / 3  # the smallest group's losses are scaled by N / N_g
    assert 0 <= records[-1]["eval/worst_group_accuracy"] <= records[-1]["eval/mean_group_accuracy"] <= 1
    state = torch.load(tmp_path / "run/checkpoints/step_4/trainer_state.pt", weights_only=False)
    assert state["alpha"].tolist() == pytest.approx([alphas[-1][f"alpha/{g}"] for g in state["groups"]])
    assert main([*args, "trainer.steps=6", "resume=auto"]) == 0
    resumed = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6] and resumed[3] == records[3]


def test_preference_training_on_prompt_only_data_names_the_missing_column(tmp_path, capsys):
    assert main(["train", "algorithm=dpo", f"output_dir={tmp_path / 'run'}"]) != 0
    err = capsys.readouterr().err
    assert "column 'chosen' is missing" in err and not (tmp_path / "run").exists()


def test_grpo_eval_on_pairs_reports_each_group(tmp_path):
    """Before training the policy is the reference: no pair is ranked above it (h = 0), and the
    task accuracy of each group comes from sampling its prompts. The two copies' sums differ in
    the last bits (the frozen copy's matrix products are split differently): a tie, not a rank."""
    out = tmp_path / "eval.json"
    assert main(["eval", "data=arithmetic_pairs", "eval.k=2", f"eval.output={out}", f"output_dir={tmp_path}"]) == 0
    figures = json.loads(out.read_text())
    assert sorted(figures["groups"]) == ["long", "medium", "short"]
    assert figures["worst_group_accuracy"] == 0.0 and figures["mean_group_accuracy"] == 0.0
    assert all(g["pairs"] == 60 and 0 < g["task_accuracy"] < 1 for g in figures["groups"].values())
    assert figures["groups"]["long"]["task_accuracy"] < figures["groups"]["short"]["task_accuracy"]
