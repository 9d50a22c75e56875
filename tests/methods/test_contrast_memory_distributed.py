"""CRD's memories with 2 gloo processes: every process ends with the memory one process gets from the whole batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdlab.methods.distill._contrast_memory import BankMemory, QueueMemory

N, DIM = 12, 4


def _batches():
    g = torch.Generator().manual_seed(0)
    # two steps of a global batch of 6 (3 per process), uneven last shard to exercise padding in the gather
    steps = [(torch.tensor([0, 5, 7, 2, 9, 11]), 6), (torch.tensor([3, 5, 1, 8, 10]), 5)]
    out = []
    for index, b in steps:
        out.append((index, torch.randint(0, 3, (b,), generator=g), torch.randn(b, DIM, generator=g),
                    torch.randn(b, DIM, generator=g)))
    return out


def _memories():
    torch.manual_seed(1)  # same random initial slots in every process, as a seeded run has
    labels = torch.arange(N) % 3
    return {"bank": BankMemory(N, DIM, labels, momentum=0.5), "queue": QueueMemory(8, DIM)}


def _update(mem, batches, part=slice(None)):
    for index, y, v_s, v_t in batches:
        mem.update(index[part], y[part], v_s[part], v_t[part])


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        mems = _memories()
        for mem in mems.values():
            for index, y, v_s, v_t in _batches():
                half = (index.numel() + 1) // 2
                part = slice(0, half) if rank == 0 else slice(half, None)
                mem.update(index[part], y[part], v_s[part], v_t[part])
        torch.save({k: m.state_dict() for k, m in mems.items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_memory_is_the_same_on_every_process_and_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for kind, single in _memories().items():
        initial = {k: v.clone() for k, v in single.state_dict().items()}
        _update(single, _batches())
        for key, value in single.state_dict().items():
            assert torch.equal(r0[kind][key], r1[kind][key]), (kind, key)
            assert torch.allclose(r0[kind][key], value, atol=1e-6), (kind, key)
        assert not torch.equal(r0[kind]["student"], initial["student"]), kind  # the updates did something
