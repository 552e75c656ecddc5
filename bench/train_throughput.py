"""Training throughput of the lmforge Transformer, optionally against nanoGPT in the same run.

Times full training steps (forward, backward, AdamW step, zero_grad) on random tokens and prints
`tokens/s: N`, peak memory, the measured matmul rate and MFU (model FLOPs per token x tokens/s
over that rate). With --nanogpt PATH it builds nanoGPT's GPT (imported from PATH/model.py, never
copied here) at the same shape and prints `ratio vs nanoGPT: X.XXx` (ours / theirs). The two
models' timed repeats alternate (ABBA order) and the ratio is the median over rounds of the two
back-to-back measurements' ratio, so drift in the machine's speed (thermal, other processes)
hits both alike. See bench/README.md.

    python bench/train_throughput.py --n-layer 6 --n-embd 384 --n-head 6 --block-size 256 \
        --batch-size 8 --vocab-size 4096 --dtype fp32 --nanogpt /path/to/nanoGPT

With --nproc N it relaunches itself under torchrun (torch.distributed.run --standalone, N processes;
gloo on CPU, NCCL on GPU; or start it with torchrun yourself), splits the model over the
(pp, dp, tp) mesh of --pp/--dp/--tp exactly as the trainer does (lmforge.train.parallel: setup,
check_layout, parallelize, build_optimizer), and times full training steps (forward+backward,
gradient clipping, AdamW, zero_grad). --batch-size is then the global batch, split over dp, and
rank 0 prints the global `tokens/s: N`, MFU against the sum of the ranks' measured matmul rates
(on CUDA: each card's bf16 matmul peak, times the number of GPUs) and the largest rank's peak memory.

    python bench/train_throughput.py --nproc 2 --tp 2 --n-layer 2 --n-embd 64 --n-head 2 \
        --block-size 64 --batch-size 4 --vocab-size 512 --dtype fp32 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from lmforge.model import ModelConfig, Transformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-kv-head", type=int, default=None)
    p.add_argument("--block-size", type=int, default=256, help="sequence length of every batch")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--pos", default="learned", choices=["learned", "sinusoidal", "rope", "alibi"])
    p.add_argument("--activation", default="gelu", choices=["relu", "gelu", "silu", "swiglu", "geglu"])
    p.add_argument("--norm", default="layernorm", choices=["layernorm", "rmsnorm"])
    p.add_argument("--no-bias", dest="bias", action="store_false", help="no biases (both models)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="auto: bf16 autocast on CUDA, fp32 on CPU; bf16/fp16 use autocast",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--repeats", type=int, default=4, help="timed repeats per model (alternating)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--nanogpt", type=Path, default=None, help="a nanoGPT checkout to compare against")
    p.add_argument("--seed", type=int, default=1337)
    g = p.add_argument_group("distributed (--nproc or torchrun; the trainer's parallel.* settings)")
    g.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="launch N processes with torchrun (standalone); --batch-size becomes the global batch",
    )
    g.add_argument("--dp", type=int, default=-1, help="data-parallel degree; -1 = nproc / (tp * pp)")
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel degree")
    g.add_argument("--pp", type=int, default=1, help="pipeline stages (uses untied embeddings)")
    g.add_argument("--dp-mode", default="fsdp", choices=["fsdp", "ddp"])
    g.add_argument("--pp-schedule", default="1f1b", choices=["gpipe", "1f1b"])
    g.add_argument("--pp-microbatches", type=int, default=0, help="0 = pp")
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--activation-checkpoint", default="none", choices=["none", "full", "selective"])
    g.add_argument(
        "--no-reshard-after-forward",
        dest="reshard_after_forward",
        action="store_false",
        help="FSDP2: keep gathered parameters until backward (ZeRO-2-like)",
    )
    return p.parse_args(argv)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# --- timing ------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """Measured FLOP/s of an n x n x n matmul (2 n^3 FLOPs), median of `reps` runs: the
    denominator of MFU, since a CPU has no published peak that holds for every machine."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up the kernel (and, on CUDA, the library handle)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


class Runner:
    """One model with its optimizer and a fixed random batch; `run(n)` times n training steps."""

    def __init__(self, name: str, model: torch.nn.Module, args: argparse.Namespace, device: torch.device):
        self.name = name
        model.to(device).train()
        # Same optimizer for both models: AdamW, decay on 2-D tensors only (as both codebases do);
        # fused kernels on CUDA, PyTorch's default implementation elsewhere.
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), **fused)
        self.model = torch.compile(model) if args.compile else model
        g = torch.Generator().manual_seed(args.seed)
        shape = (args.batch_size, args.block_size)
        self.x = torch.randint(args.vocab_size, shape, generator=g).to(device)
        self.y = torch.randint(args.vocab_size, shape, generator=g).to(device)
        self.tokens_per_step = args.batch_size * args.block_size
        dtype = resolve_dtype(args.dtype, device)
        self.ctx: Callable[[], contextlib.AbstractContextManager] = (
            (lambda: torch.autocast(device.type, dtype=dtype))
            if dtype != torch.float32
            else contextlib.nullcontext
        )
        self.device = device
        self.rates: list[float] = []
        self.peak_mem = 0.0

    def step(self) -> torch.Tensor:
        with self.ctx():
            _, loss = self.model(self.x, self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def run(self, steps: int, timed: bool = True) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = self.step()
        loss.item()  # wait for the last step (also on CUDA)
        sync(self.device)
        if timed:
            self.rates.append(steps * self.tokens_per_step / (time.perf_counter() - t0))

    @property
    def tokens_per_s(self) -> float:
        return statistics.median(self.rates)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


# --- models ------------------------------------------------------------------------------------


def ours(args: argparse.Namespace) -> tuple[Transformer, ModelConfig]:
    cfg = model_config(args)
    return Transformer(cfg), cfg


def model_config(args: argparse.Namespace) -> ModelConfig:
    cfg = ModelConfig(
        kind="decoder",
        vocab_size=args.vocab_size,
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_kv_head=args.n_kv_head,
        n_embd=args.n_embd,
        activation=args.activation,
        norm=args.norm,
        pos=args.pos,
        bias=args.bias,
        tie_embeddings=True,
        embd_dropout=0.0,
        attn_dropout=0.0,
        resid_dropout=0.0,
    )
    cfg.validate()
    return cfg


def nanogpt(args: argparse.Namespace) -> torch.nn.Module:
    """nanoGPT's GPT at the same shape, imported from the checkout's model.py."""
    path = args.nanogpt / "model.py"
    if not path.is_file():
        sys.exit(f"error: {path} not found; --nanogpt must point at a nanoGPT checkout (see bench/README.md)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conf = module.GPTConfig(
        block_size=args.block_size,
        vocab_size=args.vocab_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        dropout=0.0,
        bias=args.bias,
    )
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # it prints its parameter count
        return module.GPT(conf)


# --- memory ------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def measure_peak(runner: Runner, warmup: int) -> None:
    """Run the warmup steps and record the peak memory they needed.

    CUDA: max_memory_allocated over the warmup, minus what was allocated before (the other
    model), so it is this model's own peak. CPU: the process's max resident set size, which only
    grows and includes Python and torch themselves, so for the second model it is an upper bound.
    """
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
        base = torch.cuda.memory_allocated(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
        runner.run(max(warmup, 1), timed=False)
        runner.peak_mem = (torch.cuda.max_memory_allocated(runner.device) - base) / 2**20
    else:
        runner.run(max(warmup, 1), timed=False)
        runner.peak_mem = peak_rss_mb()


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "WORLD_SIZE" in os.environ:  # started by torchrun (by --nproc below, or by hand)
        return distributed_main(args)
    if args.nproc is not None:
        return launch(args, sys.argv[1:] if argv is None else argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as nanoGPT's train.py
        torch.backends.cudnn.allow_tf32 = True

    model, cfg = ours(args)
    fpt = cfg.flops_per_token(args.block_size)
    print(
        f"device: {device} ({threads} threads), dtype: {str(dtype).removeprefix('torch.')}"
        f"{' + torch.compile' if args.compile else ''}, torch {torch.__version__}"
    )
    print(
        f"shape: n_layer={args.n_layer} n_embd={args.n_embd} n_head={args.n_head} "
        f"n_kv_head={cfg.kv_heads} block_size={args.block_size} batch_size={args.batch_size} "
        f"vocab_size={args.vocab_size} pos={args.pos} activation={args.activation} norm={args.norm} "
        f"bias={args.bias}"
    )
    print(f"params: {cfg.num_params() / 1e6:.2f}M, training FLOPs/token: {fpt / 1e6:.1f}M")

    runners = [Runner("lmforge", model, args, device)]
    measure_peak(runners[0], args.warmup)
    if args.nanogpt is not None:
        if (args.pos, args.activation, args.norm, args.n_kv_head) != ("learned", "gelu", "layernorm", None):
            print(
                "note: nanoGPT is always learned positions + GELU + LayerNorm + MHA; the ratio "
                "compares different architectures"
            )
        runners.append(Runner("nanoGPT", nanogpt(args), args, device))
        measure_peak(runners[1], args.warmup)

    # ABBA: alternate which model goes first. The matmul rate is measured in every round too, so
    # MFU's denominator sees the same machine (load, clocks) as the numerator.
    mm_reps = 10 if device.type == "cuda" else 2
    matmul_rates = []
    for r in range(args.repeats):
        matmul_rates.append(matmul_flops(device, dtype, reps=mm_reps))
        for runner in runners if r % 2 == 0 else runners[::-1]:
            runner.run(args.steps)
    rate = statistics.median(matmul_rates)
    print(
        f"matmul {str(dtype).removeprefix('torch.')} 2048^3: {rate / 1e9:.1f} GFLOP/s "
        f"(median of {len(matmul_rates)}, min {min(matmul_rates) / 1e9:.1f}, max "
        f"{max(matmul_rates) / 1e9:.1f})"
    )

    mem_kind = "CUDA max allocated" if device.type == "cuda" else "process max RSS"
    for runner in runners:
        tps = runner.tokens_per_s
        print(
            f"[{runner.name}] tokens/s: {tps:,.0f} (median of {len(runner.rates)} x {args.steps} steps, "
            f"min {min(runner.rates):,.0f}, max {max(runner.rates):,.0f}), MFU: "
            f"{100 * fpt * tps / rate:.1f}%, "
            f"peak memory: {runner.peak_mem:,.0f} MiB ({mem_kind})"
        )
    ours_tps = runners[0].tokens_per_s
    print(f"tokens/s: {ours_tps:.0f}")
    print(f"MFU: {100 * fpt * ours_tps / rate:.1f}%")
    print(f"peak memory: {runners[0].peak_mem:.0f} MiB ({mem_kind})")
    if len(runners) == 2:
        # The ratio pairs the two measurements of each round (taken back to back) and takes the
        # median over rounds, so slow swings in machine load cancel within a pair.
        ratios = [a / b for a, b in zip(runners[0].rates, runners[1].rates)]
        print(f"nanoGPT tokens/s: {runners[1].tokens_per_s:.0f}")
        print(
            f"ratio vs nanoGPT: {statistics.median(ratios):.2f}x "
            f"(median of {len(ratios)} paired rounds, min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


# --- distributed (--nproc / torchrun) ----------------------------------------------------------


def launch(args: argparse.Namespace, argv: list[str]) -> None:
    """Rerun this script under torchrun with --nproc processes; exit with its status."""
    import subprocess

    if args.nproc < 1:
        sys.exit("error: --nproc must be at least 1")
    if args.nanogpt is not None:
        sys.exit("error: --nanogpt compares on one process; leave out --nproc")
    threads = args.threads or max(1, available_cores() // args.nproc)
    # The workers know they are workers from torchrun's WORLD_SIZE; --nproc itself must not reach
    # torchrun's own parser, which reads it as an abbreviation of --nproc-per-node.
    argv = [
        a
        for i, a in enumerate(argv)
        if not (a == "--nproc" or a.startswith("--nproc=") or (i > 0 and argv[i - 1] == "--nproc"))
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(args.nproc),
        str(Path(__file__).resolve()),
        *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if args.threads is None:
        cmd += ["--threads", str(threads)]
    sys.exit(subprocess.run(cmd, env=env, check=False).returncode)


def distributed_config(args: argparse.Namespace, device_name: str):
    """The RunConfig the trainer would run for this shape and layout (random tokens, no data)."""
    from lmforge.config import RunConfig
    from lmforge.train.config import ParallelConfig, TrainConfig

    cfg = model_config(args)
    if args.pp > 1:  # the first and last stage cannot share one weight (check_layout says so)
        cfg.tie_embeddings = False
    tc = TrainConfig(
        batch_size=args.batch_size,
        seq_len=args.block_size,
        precision=args.dtype,
        device=device_name,
        compile=args.compile,
        seed=args.seed,
        threads=args.threads or 0,
        weight_decay=0.1,
        lr=1e-4,
        betas=(0.9, 0.95),
        grad_clip=1.0,
    )
    pc = ParallelConfig(
        dp=args.dp,
        tp=args.tp,
        pp=args.pp,
        dp_mode=args.dp_mode,
        pp_schedule=args.pp_schedule,
        pp_microbatches=args.pp_microbatches,
        sequence_parallel=args.sequence_parallel,
        activation_checkpoint=args.activation_checkpoint,
        reshard_after_forward=args.reshard_after_forward,
    )
    return RunConfig(model=cfg, train=tc, parallel=pc)


def distributed_main(args: argparse.Namespace) -> None:
    """One rank. A bad layout (mesh vs world size, tp vs heads or vocabulary, pp vs layers) is
    printed once by rank 0 and every rank exits with status 2, as in the trainer."""
    from lmforge.errors import LmforgeError
    from lmforge.train.parallel.dist import errors_on_rank_zero, setup

    cfg = distributed_config(args, args.device)
    try:
        with errors_on_rank_zero():
            env = setup(cfg.parallel, args.device)
            distributed_bench(args, cfg, env)
    except LmforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def distributed_bench(args: argparse.Namespace, cfg, env) -> None:
    import torch.distributed as dist

    from lmforge.train.optim import build_optimizer
    from lmforge.train.parallel.parallelize import check_layout, parallelize
    from lmforge.train.precision import autocast, grad_scaler
    from lmforge.train.precision import resolve_dtype as train_dtype

    device, layout = env.device, env.layout
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = train_dtype(cfg.train.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with env.collectively():
        check_layout(cfg, layout, args.block_size)
    with env.collectively():
        torch.manual_seed(args.seed)  # the same weights on every rank, as the trainer
        model = Transformer(cfg.model).to(device)
        par = parallelize(model, cfg, env, dtype)
        del model
        opt = build_optimizer(par.module, cfg.train, device, par.no_decay)
        scaler = grad_scaler(device, dtype)
    # Random tokens, this dp rank's share of the global batch (tp peers and pipeline stages of one
    # dp rank hold the same batch).
    g = torch.Generator().manual_seed(args.seed + env.dp_rank)
    shape = (args.batch_size // layout.dp, args.block_size)
    batch = {
        "input_ids": torch.randint(args.vocab_size, shape, generator=g).to(device),
        "targets": torch.randint(args.vocab_size, shape, generator=g).to(device),
    }

    def train_step() -> None:  # as lmforge.train.loop: one micro-batch, clip, AdamW, zero_grad
        with autocast(device, dtype):
            par.forward_backward(batch, 1, True, scaler)
        scaler.unscale_(opt)
        par.clip_grad_norm(cfg.train.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def timed(steps: int) -> float:
        sync(device)
        env.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step()
        sync(device)
        env.barrier()  # the slowest rank ends the step for everyone
        return time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed(max(args.warmup, 1))
    global_tokens = args.batch_size * args.block_size  # per step, over all dp ranks
    rates, matmul_rates = [], []
    for _ in range(args.repeats):
        # Every rank measures its own device (CPU: its share of the cores) at once, so the sum is
        # the peak of the whole world under the same load as the steps it is compared with.
        env.barrier()
        mm = torch.tensor(
            [matmul_flops(device, dtype, reps=10 if device.type == "cuda" else 2)],
            dtype=torch.float64,
            device=env.comm_device,
        )
        matmul_rates.append(float(env.all_reduce_sum(mm).item()))
        rates.append(args.steps * global_tokens / timed(args.steps))
    if device.type == "cuda":
        mem, mem_kind = torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    else:
        mem, mem_kind = peak_rss_mb(), "process max RSS"
    mems = env.gather_objects(mem)
    if not env.is_main:
        return
    fpt = cfg.model.flops_per_token(args.block_size)
    tps, rate = statistics.median(rates), statistics.median(matmul_rates)
    n_params = cfg.model.num_params()
    print(
        f"device: {device.type} x {env.world_size} processes ({dist.get_backend()}, "
        f"{torch.get_num_threads()} threads each), dtype: {str(dtype).removeprefix('torch.')}"
        f"{' + torch.compile' if args.compile else ''}, torch {torch.__version__}"
    )
    print(
        f"layout: {layout}, dp_mode={cfg.parallel.dp_mode}"
        f"{f', pp schedule {cfg.parallel.pp_schedule}' if layout.pp > 1 else ''}"
        f"{', sequence parallel' if cfg.parallel.sequence_parallel and layout.tp > 1 else ''}"
        f", activation checkpoint {cfg.parallel.activation_checkpoint}"
    )
    print(
        f"shape: n_layer={args.n_layer} n_embd={args.n_embd} n_head={args.n_head} "
        f"n_kv_head={cfg.model.kv_heads} block_size={args.block_size} global batch_size={args.batch_size} "
        f"vocab_size={args.vocab_size} pos={args.pos} activation={args.activation} norm={args.norm} "
        f"bias={args.bias} tie_embeddings={cfg.model.tie_embeddings}"
    )
    print(f"params: {n_params / 1e6:.2f}M, training FLOPs/token: {fpt / 1e6:.1f}M")
    print(
        f"matmul {str(dtype).removeprefix('torch.')} 2048^3, sum over {env.world_size} ranks: "
        f"{rate / 1e9:.1f} GFLOP/s (median of {len(matmul_rates)}, min {min(matmul_rates) / 1e9:.1f}, "
        f"max {max(matmul_rates) / 1e9:.1f})"
    )
    print(
        f"tokens/s: {tps:.0f} (global, median of {len(rates)} x {args.steps} steps, min {min(rates):,.0f}, "
        f"max {max(rates):,.0f}; {tps / env.world_size:,.0f} per process)"
    )
    print(f"MFU: {100 * fpt * tps / rate:.1f}%")
    print(
        f"peak memory: {max(mems):.0f} MiB (largest rank; {mem_kind}; "
        f"ranks: {', '.join(f'{m:.0f}' for m in mems)})"
    )


if __name__ == "__main__":
    main()
