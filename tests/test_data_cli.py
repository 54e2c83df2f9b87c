"""``zoo data`` commands (DESIGN.md, "Data and tasks")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.fixtures import write_d4rl_hdf5
from zoo.cli_data import data_app
from zoo.data.collect import COLLECTION_PROTOCOL

runner = CliRunner()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path


def test_info_json_exact_counts(cache):
    truth = write_d4rl_hdf5(cache / "d4rl" / "hopper_medium_replay-v2.hdf5")
    result = runner.invoke(data_app, ["info", "hopper-medium-replay-v2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    n = truth["rewards"].shape[0]
    ends = truth["ends"]
    assert info["path"] == str(cache / "d4rl" / "hopper_medium_replay-v2.hdf5")
    assert info["transitions"] == n
    assert info["episodes"] == len(ends)
    assert info["terminals"] == ends.count("terminal")
    assert info["timeouts"] == ends.count("timeout") + ends.count("partial")  # trailing partial: truncated
    assert (info["obs_dim"], info["act_dim"]) == (11, 3)
    assert info["return_mean"] == pytest.approx(float(truth["returns"].mean()), rel=1e-5)


def test_info_table_and_missing(cache):
    write_d4rl_hdf5(cache / "zoo" / "d4rl" / "hopper_medium-v2.hdf5")
    ok = runner.invoke(data_app, ["info", "hopper-medium-v2"])
    assert ok.exit_code == 0 and "transitions" in ok.stdout
    missing = runner.invoke(data_app, ["info", "walker2d-medium-v2"])
    assert missing.exit_code == 1
    assert "zoo data download walker2d-medium-v2" in missing.output
    unknown = runner.invoke(data_app, ["info", "walker-medium-v2"])
    assert unknown.exit_code == 1 and "walker2d-medium-v2" in unknown.output


def test_list_shows_cached_files(cache):
    write_d4rl_hdf5(cache / "d4rl" / "hopper_medium-v2.hdf5")
    write_d4rl_hdf5(cache / "zoo" / "d4rl" / "walker2d_expert-v2.hdf5", obs_dim=17, act_dim=6)
    result = runner.invoke(data_app, ["list"])
    assert result.exit_code == 0, result.output
    assert "hopper-medium-v2" in result.stdout and "walker2d-expert-v2" in result.stdout
    rows = json.loads(runner.invoke(data_app, ["list", "--json"]).stdout)
    assert {r["name"] for r in rows} == {"hopper-medium-v2", "walker2d-expert-v2"}
    assert all(r["size"] > 0 for r in rows)


def test_collect_path_list_info_and_download_local(cache):
    out = runner.invoke(data_app, ["collect", "--env", "Pendulum-v1", "--episodes", "2", "--seed", "3"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().endswith(f"zoo/pendulum/random-v{COLLECTION_PROTOCOL}")
    assert runner.invoke(data_app, ["path"]).stdout.strip() == str(cache / "zoo")
    rows = json.loads(runner.invoke(data_app, ["list", "--json"]).stdout)
    assert [(r["kind"], r["name"]) for r in rows] == [("local", f"zoo/pendulum/random-v{COLLECTION_PROTOCOL}")]
    info = json.loads(runner.invoke(data_app, ["info", "pendulum-random", "--json"]).stdout)
    assert info["transitions"] == 400 and info["episodes"] == 2 and info["timeouts"] == 2
    again = runner.invoke(data_app, ["collect", "--episodes", "2"])
    assert again.exit_code == 1 and "overwrite" in again.output
    bad = runner.invoke(data_app, ["collect", "--quality", "legendary", "--episodes", "2"])
    assert bad.exit_code == 1 and "unknown quality 'legendary'" in bad.output
    # download of a cached task prints its path and touches no network
    dl = runner.invoke(data_app, ["download", "pendulum-random"])
    assert dl.exit_code == 0 and dl.stdout.strip().endswith(f"zoo/pendulum/random-v{COLLECTION_PROTOCOL}")
