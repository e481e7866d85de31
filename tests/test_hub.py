"""Hub ids: one line on stderr before the hub is tried; with the hub switched off, an id not in the local cache fails at
once (no network in any of these tests)."""

from __future__ import annotations

import sys
import time
import types

import pytest

from rewardlab import hub
from rewardlab.data.errors import DataError
from rewardlab.data.io import read_records
from rewardlab.modeling.sources import ModelNotFoundError, resolve_model_path

OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    for variable in OFFLINE:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    hub.announce.cache_clear()
    return tmp_path


@pytest.mark.parametrize(
    ("kind", "variable", "refused"),
    [("model", "HF_HUB_OFFLINE", True), ("model", "TRANSFORMERS_OFFLINE", True), ("model", "HF_DATASETS_OFFLINE", False),
     ("dataset", "HF_HUB_OFFLINE", True), ("dataset", "HF_DATASETS_OFFLINE", True), ("dataset", "TRANSFORMERS_OFFLINE", False)],
)  # fmt: skip
def test_offline_refusal_names_the_variable_and_the_id(monkeypatch, kind, variable, refused):
    assert hub.offline_refusal(kind, "owner/name") is None
    monkeypatch.setenv(variable, "1")
    reason = hub.offline_refusal(kind, "owner/name")
    assert (reason is not None) == refused
    if refused:
        assert reason == f"offline ({variable} is set) and not in the local hub cache"
    monkeypatch.setenv(variable, "0")
    assert hub.offline_refusal(kind, "owner/name") is None


def test_an_id_in_the_local_cache_is_left_to_the_library(monkeypatch, empty_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (empty_hub_cache / "hub" / "models--owner--name").mkdir(parents=True)
    (empty_hub_cache / "datasets" / "owner___data").mkdir(parents=True)
    assert hub.offline_refusal("model", "owner/name") is None and hub.offline_refusal("dataset", "owner/data") is None
    assert hub.offline_refusal("dataset", "owner/name") is not None  # a model's folder is not a data set's


def test_offline_data_set_fails_at_once_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "datasets", None)  # importing datasets would fail: the refusal comes first
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        list(read_records("nobody/nodata:train"))
    assert time.perf_counter() - start < 5
    assert str(err.value) == (
        "nobody/nodata:train: not a local file, and the Hugging Face hub: offline (HF_HUB_OFFLINE is set) and not in "
        "the local hub cache"
    )
    assert "trying" not in capsys.readouterr().err


def test_offline_model_fails_at_once_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_path("nobody/nomodel")
    assert time.perf_counter() - start < 5
    assert str(err.value).startswith("model 'nobody/nomodel' not found: ") and "\n" not in str(err.value)
    assert str(err.value).endswith("the Hugging Face hub: offline (HF_HUB_OFFLINE is set) and not in the local hub cache")


def test_a_hub_model_is_announced_once(capsys):
    assert resolve_model_path("owner/model") == "owner/model"
    assert resolve_model_path("owner/model") == "owner/model"
    err = capsys.readouterr().err
    assert err == "trying the Hugging Face hub for model 'owner/model' (not a local path)...\n"


def test_a_hub_data_set_is_announced_before_the_attempt(monkeypatch, capsys):
    seen = []

    def load_dataset(repo, config, split):
        seen.append(capsys.readouterr().err)  # what stderr held when the hub was tried
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError, match="loading it from the Hugging Face hub failed: no network"):
        list(read_records("owner/data"))
    assert seen == ["trying the Hugging Face hub for dataset 'owner/data' (not a local path)...\n"]
