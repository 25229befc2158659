"""experiments/common.py: a workdir's run is reused only for the command that made it."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import common  # noqa: E402

CONFIG = "cpd_jax/configs/mt25_5stage_cpu.py"


def _finished_run(workdir: pathlib.Path, flags: list[str]) -> dict:
    results = {"summary": [{"Acc": 0.5}], "R": [[0.5]]}
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(results))
    (workdir / "DONE").write_text("1 s\n")
    (workdir / common.COMMAND_FILE).write_text(json.dumps({"config": CONFIG, "flags": flags}))
    return results


def test_finished_run_of_the_same_command_is_reused(tmp_path):
    flags = ["--config.method=ours", "--config.seed=0"]
    results = _finished_run(tmp_path / "run", flags)
    assert common.run_main(CONFIG, tmp_path / "run", flags) == results


def test_run_of_another_command_is_refused_and_left_alone(tmp_path):
    _finished_run(tmp_path / "run", ["--config.method=ours", "--config.seed=0"])
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ValueError, match=r"--config.seed=1.*another --workdir"):
        common.run_main(CONFIG, tmp_path / "run", ["--config.method=ours", "--config.seed=1"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
