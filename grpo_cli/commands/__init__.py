"""One module per `grpo` command, each with `run(cfg, config_yaml, overrides) -> exit status`."""
