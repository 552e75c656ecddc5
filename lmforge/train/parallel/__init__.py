"""Training on many processes with torch.distributed: a (pp, dp, tp) mesh applied from outside the model.

    launch.py             what torchrun set in the environment (rank, world size), torch-free
    dist.py               the process group and DeviceMesh, this rank's coordinates, errors agreed over ranks,
                          rank_zero_first
    parallelize.py        parallelize(model, cfg, env) -> Parallel: layout checks, the composition order,
                          FSDP2 / DDP, and one micro-batch's forward+backward for any layout
    tensor.py             tensor (and sequence) parallel plan with DTensor's parallelize_module
    pipeline_parallel.py  pipeline stages and the GPipe / 1F1B schedules (torch.distributed.pipelining)
    recompute.py          activation checkpointing (none / full / every k-th block)
    grads.py              the global gradient norm and clipping across meshes
    sharded.py            distributed checkpoints (torch.distributed.checkpoint), resharding across layouts

Launch: `torchrun --nproc_per_node N -m lmforge train ... parallel.dp=2 parallel.tp=2 parallel.pp=2`
(README, "Training on many GPUs").
"""
