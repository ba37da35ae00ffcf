"""Two CPU processes on the gloo backend run the real trainer under DDP (rank from the environment)."""

import os
import socket

import torch
import torch.multiprocessing as mp
from engine_fakes import TinyTask, small_cfg
from sr_fakes import make_bench_dataset

from bsrdata.models.engine.trainer import train


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(task, batch):
    cfg = small_cfg(task, iterations=3, batch_size=batch, ckpt_every=100, warmup=0)
    cfg["loss"]["seg_weight"] = 0.0  # L1 only: a mean over equal per-rank batches, so DDP == one big batch
    cfg["train"]["val_groups"] = [1]
    return cfg


def _worker(rank, port, data, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    task = TinyTask()
    res = train(task, _cfg(task, 4), data, out, progress=False)
    torch.save({k: v.clone() for k, v in res["model"].state_dict().items()},
               os.path.join(result_dir, f"rank{rank}.pt"))


def test_two_process_gloo_ddp_matches_single_process(tmp_path):
    data = str(tmp_path / "data")
    make_bench_dataset(data, n_test=5, n_train=6, h=32, w=40, num_classes=4)
    mp.spawn(_worker, args=(_free_port(), data, str(tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # gradients all-reduced: identical parameters on both ranks
    assert (tmp_path / "ddp" / "last" / "model.safetensors").exists()  # rank 0 wrote the run
    task = TinyTask()
    single = train(task, _cfg(task, 4), data, tmp_path / "single", progress=False)["model"].state_dict()
    torch.manual_seed(0)  # train.seed: the initial weights both runs started from
    init = task.build_model(_cfg(task, 4))
    moved = False
    for k in r0:
        assert torch.allclose(r0[k], single[k], atol=1e-5), k  # 2 x 2 samples == 1 x 4 samples
        moved |= not torch.allclose(r0[k], init.state_dict()[k])
    assert moved
