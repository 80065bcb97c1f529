"""Time the hf sampler's generation of one fixed batch with each decoding path, interleaved, in
one process: a paired comparison that the machine's drift between commands cannot blur.

    OMP_NUM_THREADS=1 python scripts/bench_generate.py                  # the embedded default
    python scripts/bench_generate.py --rounds 4 +recipe=smollm2_cpu sampler.name=hf
    python scripts/bench_generate.py --decoders llama --room 1 8 16 32 64   # how the cache grows

Builds the configured run and generates step 0's prompts, with its seeds and sampling
parameters, once per decoding path per round (grpo_cli/sampler/decode.py): `transformers`
runs the model's own forward on every step, `llama` the sampler's own decoding steps (what
Llama-family models get). Both share the prompt pass across a group. `--room` times the
`llama` path once per value of LlamaDecode.ROOM, the positions its KV cache grows by at once
(1: a copy of the whole cache on every token, as transformers' cache does). All draw the same
tokens, which the script checks. Prints the median seconds of the rounds after the first
(which warms the allocator), wall clock and the process's CPU time (steadier on a shared
machine with one thread).
"""

from __future__ import annotations

import argparse
import sys
import time

from bench_update import paired_table

from grpo_cli.compose import compose, to_object
from grpo_cli.model_source import prepare
from grpo_cli.sampler import prompt_seeds
from grpo_cli.sampler.decode import LlamaDecode, TransformersDecode
from grpo_cli.training.clock import round_prompts
from grpo_cli.training.rl import build
from grpo_cli.training.runtime import keep_freed_memory, quiet_libraries
from grpo_cli.validation import validate

DECODERS = {"transformers": TransformersDecode, "llama": LlamaDecode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoders", nargs="+", choices=tuple(DECODERS), default=list(DECODERS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--room", type=int, nargs="+", default=[],
                        help="LlamaDecode.ROOM values to time the llama path with (default: its own)")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for grpo train")
    args = parser.parse_args()
    quiet_libraries()
    keep_freed_memory()  # as grpo train does
    cfg = prepare(validate(to_object(compose(["output_dir=unused", "sampler.name=hf", *args.overrides]))))
    run = build(cfg, cfg.model.name_or_path)
    try:
        rows, seed = round_prompts(len(run.train_prompts), cfg.trainer.prompts_per_step, 0, 0, cfg.seed)
        batch, seeds = run.train_prompts.take(rows), prompt_seeds(seed, range(len(rows)))
        decoders = {name: DECODERS[name](run.sampler.model) for name in args.decoders}
        if args.room and "llama" in decoders:
            del decoders["llama"]
            for room in args.room:
                decoders[f"llama, room {room}"] = LlamaDecode(run.sampler.model)
                decoders[f"llama, room {room}"].ROOM = room
        seconds = {name: [] for name in decoders}
        cpu_seconds = {name: [] for name in decoders}
        drawn = {}
        for _ in range(args.rounds):
            for name, decoder in decoders.items():
                run.sampler.decoder = decoder
                start, cpu_start = time.perf_counter(), time.process_time()
                rollouts = run.sampler.generate(batch, run.train_params, seeds)
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - cpu_start)
                drawn[name] = rollouts.completions
    finally:
        run.close()
    tokens = int(rollouts.completion_mask.sum())
    print(f"{len(rollouts.completions)} completions, {tokens} tokens; "
          f"the paths drew the same tokens: {len({tuple(texts) for texts in drawn.values()}) == 1}")
    print(paired_table("decoding", "generation", seconds, cpu_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
