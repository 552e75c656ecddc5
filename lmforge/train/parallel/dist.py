"""Processes and the device mesh: detect torchrun, start the process group, say where each rank sits.

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, e.g.
Slurm's srun with those exported) starts one process per device. Without it the run is a world of
one and nothing here talks to other processes: the same code path trains on a laptop.

The ranks form a (pp, dp, tp) DeviceMesh, tp innermost: tensor-parallel peers are neighbouring
ranks (the same node, the fastest links), pipeline stages outermost (they exchange only one
activation per micro-batch, so they can span nodes).

Errors: a user error that every rank sees the same way (a bad mesh, a missing file, an
incompatible checkpoint) is agreed on collectively and reported once, by rank 0; every rank exits
with status 2 and none waits for a peer that has already given up.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lmforge.errors import ConfigError, LmforgeError
from lmforge.train.config import ParallelConfig
from lmforge.train.parallel.launch import (
    is_main_process,
    launched_local_rank,
    launched_rank,
    launched_world_size,
)
from lmforge.train.precision import resolve_device

MESH_DIMS = ("pp", "dp", "tp")
REPORT_GRACE_S = 5.0  # how long the other ranks wait for rank 0 to report an agreed error


class AgreedError(LmforgeError):
    """A user error every rank knows about; rank 0 reports it, the others exit quietly."""


@dataclass(frozen=True)
class Layout:
    pp: int = 1
    dp: int = 1
    tp: int = 1

    @property
    def world_size(self) -> int:
        return self.pp * self.dp * self.tp

    def __str__(self) -> str:
        return f"pp={self.pp} dp={self.dp} tp={self.tp}"


def resolve_layout(pc: ParallelConfig, world_size: int) -> Layout:
    """The (pp, dp, tp) mesh for `world_size` processes; dp=-1 takes what tp * pp leave."""
    pc.validate()
    dp = pc.dp
    need = pc.tp * pc.pp * (dp if dp != -1 else 1)
    if world_size == 1 and need > 1:
        raise ConfigError(
            f"parallel.pp * dp * tp = {pc.pp} * {max(dp, 1)} * {pc.tp} = {need} processes, but this "
            f"is a single process; launch it with `torchrun --nproc_per_node {need} -m lmforge train "
            "...`"
        )
    if dp == -1:
        if world_size % (pc.tp * pc.pp):
            raise ConfigError(
                f"parallel.tp * parallel.pp = {pc.tp} * {pc.pp} does not divide the {world_size} "
                f"processes{_launch_hint(world_size)}"
            )
        dp = world_size // (pc.tp * pc.pp)
    layout = Layout(pp=pc.pp, dp=dp, tp=pc.tp)
    if layout.world_size != world_size:
        raise ConfigError(
            f"parallel.pp * dp * tp = {layout.pp} * {layout.dp} * {layout.tp} = {layout.world_size} "
            f"processes, but {world_size} were started (WORLD_SIZE){_launch_hint(world_size)}"
        )
    return layout


def _launch_hint(world_size: int) -> str:
    return f"; make pp * dp * tp = {world_size}, or leave parallel.dp=-1 to use the rest"


def resolve_distributed_device(name: str, local_rank: int) -> torch.device:
    """One device per process: cuda:LOCAL_RANK on GPUs, the CPU otherwise."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(name).type
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise ConfigError(f"train.device={name!r}: distributed training runs on cuda or cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
            "start at most one process per GPU (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


@dataclass
class Dist:
    """This process's place in the run. A world of one has no mesh and every coordinate 0."""

    layout: Layout
    device: torch.device
    rank: int = 0
    world_size: int = 1
    mesh: object | None = None  # DeviceMesh over MESH_DIMS when world_size > 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def coord(self, dim: str) -> int:
        return self.mesh.get_local_rank(dim) if self.mesh is not None else 0

    @property
    def pp_rank(self) -> int:
        return self.coord("pp")

    @property
    def dp_rank(self) -> int:
        return self.coord("dp")

    @property
    def tp_rank(self) -> int:
        return self.coord("tp")

    def submesh(self, *dims: str):
        return self.mesh[dims if len(dims) > 1 else dims[0]]

    def group(self, dim: str):
        return self.mesh.get_group(dim)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_max(self, value: int) -> int:
        """The largest of every rank's value (e.g. a stop signal one rank received)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def gather_objects(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def agree(self, error: BaseException | None) -> None:
        """Collective: if any rank failed, every rank raises the first failure (lowest rank)."""
        if not self.distributed:
            if error is not None:
                raise error
            return
        report = None
        if error is not None:
            report = (type(error).__name__, str(error), isinstance(error, LmforgeError))
            if not report[2]:  # a bug, not a user error: keep its traceback on the rank that hit it
                traceback.print_exception(error, file=sys.stderr)
        reports = self.gather_objects(report)
        failed = [(r, rep) for r, rep in enumerate(reports) if rep is not None]
        if not failed:
            return
        r, (name, text, user_error) = failed[0]
        if user_error:
            raise AgreedError(text) from None
        raise AgreedError(f"rank {r} failed with {name}: {text}") from None

    @contextlib.contextmanager
    def collectively(self):
        """Run a block on every rank; if it fails anywhere, it fails everywhere with one message."""
        error = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 -- every failure must reach the other ranks
            error = e
        self.agree(error)


def init_process_group(pc: ParallelConfig, device: torch.device | None = None) -> None:
    """Join the process group torchrun's environment describes (once per process; it is
    destroyed at exit). gloo carries CPU tensors, nccl CUDA ones; with auto on a GPU node both,
    so the small CPU-side collectives (objects, barriers) work too."""
    if dist.is_initialized():
        return
    backend = pc.backend
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if backend == "auto":
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=pc.timeout_s))
    atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def rank_zero_first(pc):
    """Rank 0 runs the block first (e.g. training the tokenizer, encoding shards); the others run it
    after rank 0 finished, when its files exist and they only read them. A no-op in a world of one.
    The others wait at most pc.timeout_s (pc: the run's ParallelConfig)."""
    if launched_world_size() == 1:
        yield
        return
    init_process_group(pc)
    if not is_main_process():
        dist.barrier()
    yield
    if is_main_process():
        dist.barrier()


def setup(pc: ParallelConfig, device_name: str = "auto") -> Dist:
    """This process's Dist: a world of one, or (under torchrun) the process group and the mesh.

    Layout errors are the same on every rank and are raised before any rank waits on another."""
    world_size = launched_world_size()
    try:
        layout = resolve_layout(pc, world_size)
    except ConfigError as e:
        raise (AgreedError(str(e)) if world_size > 1 else e) from None
    if world_size == 1:
        return Dist(layout=layout, device=resolve_device(device_name))
    rank, local_rank = launched_rank(), launched_local_rank()
    try:
        device = resolve_distributed_device(device_name, local_rank)
    except ConfigError as e:
        raise AgreedError(str(e)) from None
    init_process_group(pc, device)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (layout.pp, layout.dp, layout.tp), mesh_dim_names=MESH_DIMS)
    return Dist(layout=layout, device=device, rank=rank, world_size=world_size, mesh=mesh)


@contextlib.contextmanager
def errors_on_rank_zero():
    """An error all ranks agreed on is printed by rank 0 only; the other ranks exit with status 2."""
    try:
        yield
    except AgreedError:
        if not is_main_process():
            # Leave rank 0 time to print first: torchrun stops every worker within 0.1 s of the
            # first exit, and the message must not die with it. (Rank 0's exit ends this sooner.)
            time.sleep(REPORT_GRACE_S)
            raise SystemExit(2) from None
        raise
