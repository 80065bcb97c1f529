"""Training: the driver that runs every objective's steps (driver.py), the objectives table and
start-up plan (objectives.py), the RL job (rl.py, with rollout_worker.py for generation ahead)
and the preference job (offline.py), the learner both use (learner.py, with logprobs.py,
lora.py, distributed.py), and what they build from the config (runtime.py, evaluate.py,
clock.py, shutdown.py)."""
