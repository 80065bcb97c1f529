"""Peak memory and time of the learner's log-prob forward + backward, whole against chunked
(`trainer.logprob_chunk`), on a model with Qwen2.5's 151,936-token vocabulary.

    python scripts/bench_logprobs.py                          # batch 2 x 1024 completion tokens
    python scripts/bench_logprobs.py --batch 4 --length 2048 --chunks 0,128,512

Each setting runs in a fresh process (the peak resident memory of a process only grows), on
a randomly initialised small Llama with the big vocabulary, so the logits dominate memory as
they do for a real model's long completions. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VOCAB = 151_936


def measure(batch: int, length: int, chunk: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from grpo_cli.training.logprobs import sequence_logprobs
    from grpo_cli.types import TrainBatch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=length + 64)
    model = LlamaForCausalLM(config)
    prompt = 32
    ids = torch.randint(0, VOCAB, (batch, prompt + length))
    mask = torch.ones_like(ids)
    loss_mask = torch.ones(batch, length)
    data = TrainBatch(input_ids=ids, attention_mask=mask, loss_mask=loss_mask,
                      advantages=torch.zeros(batch, length), sampler_logprobs=torch.zeros(batch, length))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    logprobs, _ = sequence_logprobs(model, data, 1.0, with_entropy=True, chunk=chunk)
    (logprobs * loss_mask).sum().backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"chunk": chunk, "seconds": seconds, "peak_gib": peak / 2**20, "growth_gib": (peak - before) / 2**20,
            "fp32_logits_gib": batch * length * VOCAB * 4 / 2**30}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--chunks", default="0,64,256", help="comma-separated; 0 = whole")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure(args.batch, args.length, args.one)))
        return 0
    print(f"batch {args.batch} x {args.length} completion tokens, vocabulary {VOCAB:,}")
    print(f"{'chunk':>6} {'seconds':>8} {'peak RSS GiB':>13} {'growth GiB':>11} {'whole fp32 logits GiB':>22}")
    for chunk in [int(c) for c in args.chunks.split(",")]:
        done = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--length", str(args.length),
                               "--one", str(chunk)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{row['chunk']:>6} {row['seconds']:>8.2f} {row['peak_gib']:>13.2f} {row['growth_gib']:>11.2f} "
              f"{row['fp32_logits_gib']:>22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
