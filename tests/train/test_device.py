"""TrainConfig.device / --device: what each string means, the errors, and resuming on another device.

These run on every machine: where a GPU would be needed, CUDA's presence is faked with monkeypatch
before anything touches it (resolve_device only asks torch.cuda.is_available / device_count).  The
GPU itself is exercised in tests/test_cuda.py.
"""

from __future__ import annotations

import pytest
import torch

from geoflow.train import DistInfo, Trainer, TrainConfig, load_checkpoint
from geoflow.train.distributed import resolve_device


def _config(tmp_path, **kw):
    base = dict(dataset="vmf_mixture", n_samples=120, steps=4, batch_size=8, hidden=8, depth=1, time_dim=4,
                eval_every=2, val_points=8, nll_steps=2, warmup=1, seed=0, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _fake_gpus(monkeypatch, n: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_default_is_auto_and_the_accepted_strings():
    assert TrainConfig().device == "auto"
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert TrainConfig(device=ok).device == ok
    for bad in ("gpu", "CPU", "cuda:", "cuda:-1", "cuda:x", "cuda0", "mps", "", None, 0):
        with pytest.raises(ValueError, match=r"TrainConfig\.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            TrainConfig(device=bad)


def test_auto_is_the_cpu_without_cuda_and_cuda0_with_it(monkeypatch):
    _no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    _fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_a_gpu_and_a_missing_gpu_index_are_clear_errors(monkeypatch):
    _no_cuda(monkeypatch)
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"device '{dev}' needs a CUDA GPU, and torch sees none.*--device cpu"):
            resolve_device(dev)
    _fake_gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match=r"device 'cuda:7' names GPU 7, but this machine has 1 \(cuda:0\); use --device cuda"):
        resolve_device("cuda:7")
    _fake_gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match=r"names GPU 2, but this machine has 2 \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_the_trainer_refuses_cuda_without_a_gpu_before_loading_anything(tmp_path, monkeypatch):
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match=r"TrainConfig\.device 'cuda' needs a CUDA GPU"):
        Trainer(_config(tmp_path, device="cuda", dataset="no_such_dataset"), progress=False)


def test_under_torchrun_the_process_group_decides(monkeypatch):
    """gloo -> the CPU, nccl -> cuda:LOCAL_RANK; "auto" follows, another explicit device is an error (not honoured)."""
    gloo = DistInfo(rank=1, world_size=2, local_rank=1, backend="gloo", device=torch.device("cpu"))
    nccl = DistInfo(rank=1, world_size=2, local_rank=1, backend="nccl", device=torch.device("cuda", 1))
    _fake_gpus(monkeypatch, 2)  # resolve_device must not pick cuda:0 for auto under gloo even with GPUs around
    assert resolve_device("auto", gloo) == torch.device("cpu")
    assert resolve_device("cpu", gloo) == torch.device("cpu")
    assert resolve_device("auto", nccl) == torch.device("cuda", 1)
    assert resolve_device("cuda", nccl) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", nccl) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device 'cpu' differs from this process's device cuda:1 under torchrun "
                                         r"\(backend nccl: nccl runs every process on its own GPU"):
        resolve_device("cpu", nccl)
    with pytest.raises(ValueError, match=r"device 'cuda:0' differs from this process's device cuda:1"):
        resolve_device("cuda:0", nccl)
    with pytest.raises(ValueError, match=r"device 'cuda' differs from this process's device cpu under torchrun "
                                         r"\(backend gloo: .*--backend nccl"):
        resolve_device("cuda", gloo)
    # a process without a group (backend None) is a single process: its DistInfo.device is only a placeholder
    assert resolve_device("auto", DistInfo(rank=0, world_size=2)) == torch.device("cuda", 0)


def test_trainer_with_device_cpu_under_nccl_raises_before_touching_the_gpu(tmp_path):
    nccl = DistInfo(rank=0, world_size=1, local_rank=0, backend="nccl", device=torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"TrainConfig\.device 'cpu' differs from this process's device cuda:0"):
        Trainer(_config(tmp_path, device="cpu"), progress=False, dist=nccl)


def test_the_device_is_not_part_of_the_run_identity(tmp_path):
    """A run written with device 'cpu' resumes with device 'auto' (on a GPU machine: on cuda:0, with a note)."""
    Trainer(_config(tmp_path, device="cpu", steps=2), progress=False, log=lambda *_: None).fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["device"] == "cpu" and state["config"]["device"] == "cpu"
    logs = []
    with pytest.raises(ValueError, match="different config"):  # other fields still count
        Trainer(_config(tmp_path, device="auto", steps=4, lr=0.5), progress=False, log=lambda *_: None).fit()
    t2 = Trainer(_config(tmp_path, device="auto", steps=2), progress=False, log=logs.append)
    assert t2.maybe_resume() and t2.step == 2
    moved = any("was written on cpu, resuming on cuda" in str(m) for m in logs)
    assert moved == torch.cuda.is_available(), logs


def test_cli_device_flag(tmp_path, capsys):
    from geoflow.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--device" in capsys.readouterr().out
    args = ["train", "vmf_mixture", "--n-samples", "100", "--steps", "2", "--batch-size", "8", "--hidden", "8",
            "--depth", "1", "--eval-every", "2", "--val-points", "4", "--nll-steps", "2", "--quiet", "--no-plot"]
    assert main([*args, "--out", str(tmp_path / "r"), "--device", "tpu"]) == 2
    assert "TrainConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "r"), "--device", "cpu"]) == 0
    ckpt = str(tmp_path / "r" / "best.pt")
    assert main(["nll", ckpt, "--steps", "2", "--device", "gpu"]) == 2
    assert "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err
    assert main(["sample", ckpt, "--n", "3", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["nll", ckpt, "--steps", "2", "--device", "cpu", "--json"]) == 0
