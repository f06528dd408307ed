"""geoflow.train.malloc: large freed blocks stay in the heap for reuse; the CLI applies it unless told not to."""

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

from geoflow import cli
from geoflow.train import malloc

glibc = pytest.mark.skipif(not malloc._is_glibc() or not hasattr(ctypes.CDLL(None), "mallinfo2"),
                           reason="keep_freed_memory acts on glibc only, and reading its heap needs mallinfo2 "
                                  "(glibc >= 2.33)")

# In a fresh process (mallopt is process-wide): allocate and free a 64 MiB tensor five times, reading glibc's
# mallinfo2 after each allocation and each free.
_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    class MI2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MI2
    import torch
    from geoflow.train.malloc import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
    rows = []
    for _ in range(5):
        x = torch.empty(16 * 2**20); x.fill_(1.0)  # 64 MiB, written
        a = libc.mallinfo2()
        del x
        f = libc.mallinfo2()
        rows.append(dict(mmapped=a.hblkhd, heap=a.arena, mmapped_freed=f.hblkhd, free_in_heap=f.fordblks))
    print(json.dumps(dict(tuned=tuned, rows=rows)))
""")


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_default_glibc_maps_and_unmaps_a_64_mib_tensor_every_time():
    """The behaviour the module exists for: without it each 64 MiB tensor is a fresh mmap, returned on free."""
    for r in _probe("default")["rows"]:
        assert r["mmapped"] - r["mmapped_freed"] >= 64 * 2**20
        assert r["free_in_heap"] < 64 * 2**20


@glibc
def test_keep_freed_memory_serves_large_tensors_from_the_heap_and_reuses_them():
    res = _probe("tuned")
    assert res["tuned"] is True
    for r in res["rows"]:
        assert r["mmapped"] - r["mmapped_freed"] < 2**20  # not mmapped
        assert r["free_in_heap"] >= 64 * 2**20  # freed block kept, not trimmed
    # freed blocks are reused: five allocations grow the heap by at most one more block (a small allocation
    # can land in a freed block and split it once), not by five
    heaps = [r["heap"] for r in res["rows"]]
    assert heaps[-1] - heaps[0] <= 64 * 2**20 + 2**20


@pytest.mark.parametrize("kw, err", [
    (dict(mmap_threshold=0), ValueError), (dict(trim_threshold=2**31), ValueError),
    (dict(mmap_threshold=1.5), TypeError), (dict(trim_threshold=True), TypeError),
])
def test_bad_thresholds_name_the_argument(kw, err):
    with pytest.raises(err, match=next(iter(kw))):
        malloc.keep_freed_memory(**kw)


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(malloc.os, "confstr", lambda name: "musl 1.2")  # os.confstr("CS_GNU_LIBC_VERSION")
    assert malloc.keep_freed_memory() is False


@pytest.mark.parametrize("env, calls", [(None, 1), ("keep", 1), ("default", 0)])
def test_the_cli_keeps_freed_memory_unless_told_not_to(monkeypatch, tmp_path, env, calls):
    seen = []
    monkeypatch.setattr(malloc, "keep_freed_memory", lambda: seen.append(1) or True)
    if env is None:
        monkeypatch.delenv("GEOFLOW_MALLOC", raising=False)
    else:
        monkeypatch.setenv("GEOFLOW_MALLOC", env)
    assert cli.main(["nll", str(tmp_path / "missing.pt")]) == 2  # fails after the allocator set-up
    assert len(seen) == calls


def test_the_cli_rejects_an_unknown_geoflow_malloc(monkeypatch, capsys):
    monkeypatch.setenv("GEOFLOW_MALLOC", "fast")
    assert cli.main(["nll", "missing.pt"]) == 2
    err = capsys.readouterr().err
    assert "GEOFLOW_MALLOC" in err and "'fast'" in err


def test_malloc_ops_benchmark_runs_and_records_its_setting(tmp_path):
    from ._bench import load_benchmark

    ops = load_benchmark("malloc_ops")
    res = ops.main(["--malloc", "default", "--rows", "512", "--cols", "8", "--repeats", "1", "--json",
                    str(tmp_path / "ops.json")])
    assert res["malloc"] == "default" and res["applied"] is False
    assert all(res[k] > 0 for k in ("silu_fresh_ms", "silu_out_ms", "add_fresh_ms", "add_out_ms"))
    assert json.loads((tmp_path / "ops.json").read_text())["shape"] == [512, 8]
