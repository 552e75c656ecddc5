"""Pre-training: `loop.train(cfg, shard_dir, tokenizer, run_dir) -> TrainResult` and
`checkpoint.load_model(path) -> (model, model config)`.

    loop.py        the training loop (the one place that ties the parts together)
    state.py       TrainState: counters, data position, RNG states (what a resume needs besides weights)
    checkpoint.py  atomic checkpoints, latest_checkpoint, load_model
    optim.py       AdamW/Adam with weight decay on matrices only
    schedule.py    learning-rate schedule and batch-size ramp (pure functions of the step)
    precision.py   device and dtype choice, autocast, grad scaler
    objectives.py  next-token, masked-LM and span-denoising batches
    validate.py    held-out loss, perplexity, bits per byte
    metrics.py     metrics.jsonl, TensorBoard, progress display, MFU

Import the submodules directly: this package is imported by lmforge.config (for TrainConfig),
so it stays free of imports itself; and train imports RunConfig only for annotations (the
whole run config of a checkpoint is lmforge.config.read_config).
"""
