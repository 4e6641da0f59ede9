"""Process-group facts that do not need DeepSpeed: who am I, how many are we, and seeding.

Works the same under the `deepspeed` launcher, `torchrun`, `srun` (one task per rank) and a plain
`python` process, for which the single-rank rendezvous variables are filled in here (without them
DeepSpeed would try MPI discovery and fail with "No module named 'mpi4py'").
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import time

import numpy as np
import torch

from biobert.errors import UserError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_env() -> None:
    """Fill RANK/WORLD_SIZE/... from Slurm (srun, one task per rank) or for a single plain process."""
    if (
        "RANK" not in os.environ
        and "SLURM_PROCID" in os.environ
        and "SLURM_NTASKS" in os.environ
        and int(os.environ["SLURM_NTASKS"]) > 1
    ):
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
        _slurm_rendezvous()
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if int(os.environ["WORLD_SIZE"]) > 1:
            os.environ["MASTER_PORT"] = "29500"
        else:
            os.environ["MASTER_PORT"] = str(free_port())


def init_single_process(backend: str, timeout) -> None:
    """torch.distributed for a world of one on an in-memory store, so that DeepSpeed finds it initialised: a
    TCP store needs a port, and runs started side by side (the learning curve's workers) could both be handed
    the same free one between free_port() and bind (EADDRINUSE)."""
    import torch.distributed as tdist

    if not tdist.is_initialized():
        tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1, timeout=timeout)


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist ("gpu[007-012,020],cpu3" -> "gpu007"), as `scontrol show hostnames`
    would print it; parsed here so that no Slurm client is needed on the compute node."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]  # commas outside brackets separate host groups
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], first)


def slurm_master_port(job_id: int) -> int:
    """A port that is the same on every node of a job and differs between jobs sharing a node. Kept below
    Linux's ephemeral range (32768+), where an outgoing connection could already hold it."""
    return 20000 + job_id % 12000


def _slurm_rendezvous() -> None:
    """srun started one task per rank: derive a missing MASTER_ADDR/PORT from the job, then fail fast and
    clearly when the rendezvous cannot work, instead of hanging for DeepSpeed's 10-minute timeout."""
    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
    if "MASTER_ADDR" not in os.environ and nodelist:
        os.environ["MASTER_ADDR"] = first_slurm_host(nodelist)
    if "MASTER_PORT" not in os.environ and "SLURM_JOB_ID" in os.environ:
        os.environ["MASTER_PORT"] = str(slurm_master_port(int(os.environ["SLURM_JOB_ID"])))
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        check_rendezvous(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            rank(),
            float(os.environ.get("BIOBERT_RDZV_TIMEOUT", "600")),
        )


def check_rendezvous(addr: str, port: int, this_rank: int, timeout_s: float) -> None:
    """Rank 0 must be able to listen on `addr` (it is the first host of the step); every other rank waits
    up to `timeout_s` (env BIOBERT_RDZV_TIMEOUT) for rank 0 to listen there."""
    where = f"rendezvous MASTER_ADDR={addr} MASTER_PORT={port} (rank {this_rank} on {socket.gethostname()})"
    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(
            f"{where}: the address does not resolve ({e}); check MASTER_ADDR / the node's /etc/hosts or DNS"
        ) from None
    if this_rank == 0:
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((sockaddr[0], 0))
            except OSError as e:
                raise UserError(
                    f"{where}: rank 0 cannot listen on {addr} ({e.strerror}): it is not an address of "
                    "this host. MASTER_ADDR must be the first host of the job step."
                ) from None
        return
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((addr, port), timeout=min(2.0, timeout_s)):
                return  # rank 0's store is listening; the real rendezvous follows
        except OSError as e:
            last_error = e.strerror or str(e)
        time.sleep(0.5)
    raise UserError(
        f"{where}: nothing listened there within {timeout_s:.0f} s (last error: {last_error}). "
        "Rank 0 did not start or failed (see its log), or the port is blocked between nodes; "
        "set BIOBERT_RDZV_TIMEOUT to wait longer."
    )


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of its parts (run seed, step, rank...)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
