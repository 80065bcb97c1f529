"""The run folder, one home for it: its file names and paths (layout.py), who may write it
(admission.py: where it may lie, what a resume may change; lock.py: one live run at a time),
its checkpoints (checkpoint.py), the overrides it started with (overrides.py), and what
`grpo runs` reads back from it (listing.py)."""
