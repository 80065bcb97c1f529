"""One module per `grpo` command: train, eval, validate and score have
`run(cfg, config_yaml, overrides) -> exit status`; plot and runs read run folders and have
`main(args) -> exit status`."""
