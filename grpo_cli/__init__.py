"""grpo: fine-tune language models with GRPO-family reinforcement learning."""

__version__ = "0.1.0"
