"""benchmarks/alignment_cost.py end to end at toy size: settings rows, the order-only row, the JSON."""

import json

from ._bench import load_benchmark

ac = load_benchmark("alignment_cost")


def test_toy_run_writes_every_setting_and_the_order_only_row(tmp_path, capsys):
    out = tmp_path / "ac.json"
    ac.main(["--batch", "6", "--particles", "7", "--data", "gaussian", "--settings", "1,0 2,1 perm",
             "--solver-table", "--solver-pairs", "8", "--json", str(out)])
    text = capsys.readouterr().out
    assert "alignment order only (rotations=False)" in text
    res = json.loads(out.read_text())
    rows = {r["label"]: r for r in res["alignment"]}
    assert set(rows) == {"starts=1 n_iter=0", "starts=2 n_iter=1", "order only (rotations=False)"}
    perm = rows["order only (rotations=False)"]
    assert perm["rotations"] is False and perm["starts"] is None
    # OT over order-aligned costs can only improve on keeping the given pairs unaligned
    assert perm["transport_cost"] <= res["transport_cost_independent"] + 1e-4
    # the settings share the first start: more starts and rounds never align the batch worse
    assert rows["starts=2 n_iter=1"]["transport_cost"] <= rows["starts=1 n_iter=0"]["transport_cost"] + 1e-4  # float32 clouds
    assert res["solver_table_agreement"] == 1.0
