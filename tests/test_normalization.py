"""Stored reward normalisation: statistics recorded by train-rm, applied by score / serve / TRL / verl, baked by export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.templates import encode_prompt_response, pad_sequences
from rewardlab.modeling.loader import load_reward_model
from rewardlab.modeling.normalization import MIN_STD, NormalizationUnavailable, RewardStatistics, normalize_rewards
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.runtime import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


# --- the math -----------------------------------------------------------------------------------------------------------


def test_statistics_are_the_population_mean_and_std() -> None:
    values = torch.tensor([0.5, -1.25, 3.0, 2.0, 7.5], dtype=torch.float32)
    stats = RewardStatistics.of(values, "x")
    assert stats.mean == pytest.approx(np.mean(values.numpy()), abs=1e-12)
    assert stats.std == pytest.approx(np.std(values.numpy(), ddof=0), abs=1e-6)
    assert stats.count == 5 and stats.source == "x"
    normalised = normalize_rewards(values.double(), stats).numpy()
    assert np.mean(normalised) == pytest.approx(0.0, abs=1e-12) and np.std(normalised) == pytest.approx(1.0, abs=1e-12)
    assert RewardStatistics.from_dict(stats.to_dict()) == stats and RewardStatistics.from_dict(None) is None


def test_degenerate_rewards() -> None:
    assert RewardStatistics.of(torch.full((4,), 2.0), "constant").std == MIN_STD  # clamped, as OpenRLHF clamps it
    with pytest.raises(ValueError, match="non-finite"):
        RewardStatistics.of(torch.tensor([1.0, float("nan")]), "x")
    with pytest.raises(ValueError, match="at least 2"):
        RewardStatistics.of(torch.tensor([1.0]), "x")
    with pytest.raises(ValueError, match="positive std"):
        RewardStatistics(0.0, 0.0, 2, "x")


def test_forward_normalises_every_position_packed_or_padded() -> None:
    rm = build_reward_model("tiny-llama", head_dropout=0.0, seed=3).eval()
    tok = rm.tokenizer
    seqs = [encode_prompt_response(tok, "a prompt", " an answer"), encode_prompt_response(tok, "q", " longer answer here")]
    ids, mask, _ = pad_sequences(seqs, tok.pad_token_id, "right")
    with torch.no_grad():
        raw = rm(ids, mask)
        with pytest.raises(NormalizationUnavailable, match="no reward statistics"):
            rm.use_normalization()
        rm.config.reward_statistics = RewardStatistics(0.3, 2.5, 10, "test")
        rm.use_normalization()
        for packed in (False, True):
            out = rm(ids, mask, packed=packed)
            real = mask.bool()
            torch.testing.assert_close(out.position_rewards[real], (raw.position_rewards[real] - 0.3) / 2.5, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.sequence_rewards, (raw.sequence_rewards - 0.3) / 2.5, atol=1e-5, rtol=0)
        rm.use_normalization(False)
        torch.testing.assert_close(rm(ids, mask).sequence_rewards, raw.sequence_rewards)


# --- a trained model ------------------------------------------------------------------------------------------------------


def response_rows(path) -> list[dict]:
    """Every training pair's chosen and rejected response as prompt/completion rows: what the statistics were computed on."""
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    return [{"prompt": p["prompt"], "completion": p[key]} for p in pairs for key in ("chosen", "rejected")]


@pytest.fixture(scope="module")
def trained(easy_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("norm")
    out = root / "run"
    args = ["train-rm", "--train-data", str(easy_data / "small.jsonl"), "--max-steps", "4", "--batch-size", "8",
            "--lr", "0.003", "--head-dropout", "0", "--output-dir", str(out), "--no-progress"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    responses = root / "responses.jsonl"
    write_jsonl(responses, response_rows(easy_data / "small.jsonl"))
    bare = root / "bare"  # a model saved without statistics (as before they were recorded)
    build_reward_model("tiny-llama", head_dropout=0.0, seed=1).save_pretrained(bare)
    return out, responses, bare


def score_rows(model, data, out, *extra) -> tuple[list[dict], dict]:
    result = runner.invoke(
        app, ["score", "--model", str(model), "--data", str(data), "--output", str(out), "--no-progress", *extra]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows, json.loads(out.with_name(out.name.replace(".jsonl", ".config.json")).read_text())


def test_training_records_statistics_of_its_responses(trained, tmp_path) -> None:
    run, responses, _ = trained
    saved = json.loads((run / "model" / "rewardlab_config.json").read_text())["reward_statistics"]
    assert json.loads((run / "metrics.json").read_text())["reward_statistics"] == saved
    assert saved["count"] == 96 and "chosen and rejected" in saved["source"]  # 48 pairs
    raw, config = score_rows(run, responses, tmp_path / "raw.jsonl")
    rewards = np.array([r["reward"] for r in raw])
    assert saved["mean"] == pytest.approx(rewards.mean(), abs=1e-5) and saved["std"] == pytest.approx(rewards.std(), abs=1e-5)
    assert config["config"]["normalize"] is False and config["config"]["reward_statistics"] is None


def test_score_normalize_gives_mean_0_std_1_on_the_training_responses(trained, tmp_path) -> None:
    run, responses, _ = trained
    raw, _ = score_rows(run, responses, tmp_path / "raw.jsonl", "--token-rewards", "r3hf")
    rows, config = score_rows(run, responses, tmp_path / "norm.jsonl", "--normalize", "--token-rewards", "r3hf")
    rewards = np.array([r["reward"] for r in rows])
    assert abs(rewards.mean()) < 0.01 and abs(rewards.std() - 1.0) < 0.01
    stats = config["config"]["reward_statistics"]
    assert config["config"]["normalize"] is True and stats["count"] == 96
    mean, std = stats["mean"], stats["std"]
    assert std != pytest.approx(1.0, abs=0.05)  # the check below would be vacuous on a model already at scale 1
    for r, n in zip(raw, rows, strict=True):
        assert n["reward"] == pytest.approx((r["reward"] - mean) / std, abs=1e-5)
        assert n["prompt_reward"] == pytest.approx((r["prompt_reward"] - mean) / std, abs=1e-5)
        # r3hf token rewards: differences of normalised position rewards = raw differences / std; they still telescope
        assert n["token_rewards"] == pytest.approx([t / std for t in r["token_rewards"]], abs=1e-5)
        assert sum(n["token_rewards"]) == pytest.approx((r["reward"] - r["prompt_reward"]) / std, abs=1e-4)


def test_normalize_without_statistics_is_one_line(trained, tmp_path) -> None:
    _, responses, bare = trained
    for args in (
        ["score", "--model", str(bare), "--data", str(responses), "--output", str(tmp_path / "s.jsonl")],
        ["score", "--model", "tiny-llama", "--data", str(responses), "--output", str(tmp_path / "s.jsonl")],
        ["serve", "--model", str(bare)],
        ["export", "--model", str(bare), "--output", str(tmp_path / "hf")],
    ):
        result = runner.invoke(app, [*args, "--normalize"])
        assert result.exit_code == 1, args
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "no reward statistics" in lines[0], result.output
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "hf").exists()
    with pytest.raises(NormalizationUnavailable):
        load_reward_model(bare, normalize=True)


def test_export_normalize_matches_in_plain_transformers(trained, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification

    run, responses, _ = trained
    norm, _ = score_rows(run, responses, tmp_path / "norm.jsonl", "--normalize")
    want = torch.tensor([r["reward"] for r in norm])
    logits = {}
    for name, extra in (("scaled", ["--normalize"]), ("raw", [])):
        result = runner.invoke(app, ["export", "--model", str(run), "--output", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / name).eval()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        rows = [json.loads(line) for line in responses.read_text().splitlines()]
        seqs = [encode_prompt_response(tok, r["prompt"], r["completion"]) for r in rows]
        ids, mask, _ = pad_sequences(seqs, tok.pad_token_id, "right")
        with torch.no_grad():
            logits[name] = classifier(input_ids=ids, attention_mask=mask).logits[:, 0]
        config = classifier.config
        # OpenRLHF's normalize_reward: (logit - config.mean) / config.std, with the values the export wrote
        torch.testing.assert_close((logits[name] - config.mean) / config.std, want, atol=1e-4, rtol=0)
    scaled, record = logits["scaled"], classifier.config.rewardlab_normalization
    stats = json.loads((run / "model" / "rewardlab_config.json").read_text())["reward_statistics"]
    # the bias-free score layer holds weight / std: logits are the normalised rewards plus mean / std
    offset = json.loads((tmp_path / "scaled" / "config.json").read_text())["rewardlab_normalization"]["offset"]
    assert offset == pytest.approx(stats["mean"] / stats["std"], rel=1e-9) and abs(offset) > 0.1
    torch.testing.assert_close(scaled - offset, want, atol=1e-4, rtol=0)
    assert float(scaled.std(unbiased=False)) == pytest.approx(1.0, abs=0.01)
    assert record["offset"] is None and record["normalized_head"] is False  # the raw export's record (last loaded)
    torch.testing.assert_close(logits["raw"], want * stats["std"] + stats["mean"], atol=1e-4, rtol=0)


def test_trl_reward_function_with_normalize_equals_score(trained, tmp_path) -> None:
    from rewardlab.integrations.trl import reward_function

    run, responses, bare = trained
    norm, _ = score_rows(run, responses, tmp_path / "norm.jsonl", "--normalize")
    rows = [json.loads(line) for line in responses.read_text().splitlines()]
    fn = reward_function(str(run), device="cpu", batch_size=5, normalize=True)
    got = fn(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    assert got == pytest.approx([r["reward"] for r in norm], abs=1e-5)
    with pytest.raises(NormalizationUnavailable):
        reward_function(str(bare), normalize=True)  # at construction, not at the first step
    with pytest.raises(NormalizationUnavailable):
        reward_function(load_reward_model(bare), normalize=True)


def test_verl_scorer_with_normalize_equals_score(trained, tmp_path) -> None:
    from rewardlab.integrations.verl import TokenRewardScorer, VerlRewardOptions, _server_scores

    run, responses, bare = trained
    norm, _ = score_rows(run, responses, tmp_path / "norm.jsonl", "--normalize", "--token-rewards", "r3hf")
    rm = load_reward_model(run)
    rows = []
    for r in [json.loads(line) for line in responses.read_text().splitlines()][:12]:
        e = encode_prompt_response(rm.tokenizer, r["prompt"], r["completion"])
        rows.append((e.input_ids[: e.response_start], e.input_ids[e.response_start :]))
    scorer = TokenRewardScorer(VerlRewardOptions(reward_model=str(run), normalize=True, device="cpu", micro_batch_size=5))
    for got, want in zip(scorer.score(rows), norm, strict=False):
        assert got.reward == pytest.approx(want["reward"], abs=1e-5)
        assert got.token_rewards == pytest.approx(want["token_rewards"], abs=1e-5)
    with pytest.raises(NormalizationUnavailable):
        VerlRewardOptions(reward_model=str(bare), normalize=True)
    body = {"results": [{"reward": 0.0, "prompt_reward": 0.0, "token_rewards": []}], "normalize": False}
    with pytest.raises(RuntimeError, match="serve --normalize"):
        _server_scores(body, 1, normalize=True)  # a server that does not normalise is caught, not trusted
    assert len(_server_scores(body | {"normalize": True}, 1, normalize=True)) == 1


def test_server_with_normalize_states_it_and_equals_score(trained, tmp_path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from rewardlab.serve import create_app

    run, responses, _ = trained
    norm, _ = score_rows(run, responses, tmp_path / "norm.jsonl", "--normalize")
    rows = [json.loads(line) for line in responses.read_text().splitlines()][:6]
    with TestClient(create_app(load_reward_model(run, normalize=True))) as client:
        health = client.get("/health").json()
        assert health["normalize"] is True and health["reward_statistics"]["count"] == 96
        body = client.post("/score", json={"items": [{"prompt": r["prompt"], "response": r["completion"]} for r in rows]}).json()
    assert body["normalize"] is True
    assert [r["reward"] for r in body["results"]] == pytest.approx([r["reward"] for r in norm[:6]], abs=1e-5)


# --- --norm-data and ensembles --------------------------------------------------------------------------------------------


def test_ensemble_records_the_statistics_of_its_aggregate_on_norm_data(easy_data, tmp_path) -> None:
    norm_data = tmp_path / "norm.jsonl"
    write_jsonl(norm_data, response_rows(easy_data / "small.jsonl")[:30])
    out = tmp_path / "ens"
    args = ["train-rm", "--train-data", str(easy_data / "small.jsonl"), "--max-steps", "2", "--batch-size", "8",
            "--ensemble-size", "2", "--head-dropout", "0", "--norm-data", str(norm_data), "--output-dir", str(out),
            "--no-progress"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "model" / "rewardlab_ensemble.json").read_text())
    assert manifest["reward_statistics"]["source"] == str(norm_data) and manifest["reward_statistics"]["count"] == 30
    assert json.loads((out / "metrics.json").read_text())["reward_statistics"] == manifest["reward_statistics"]
    member = json.loads((out / "model" / "member-0" / "model" / "rewardlab_config.json").read_text())
    assert member["reward_statistics"]["count"] == 30  # each member keeps its own
    rows, _ = score_rows(out, norm_data, tmp_path / "s.jsonl", "--normalize")
    rewards = np.array([r["reward"] for r in rows])
    assert abs(rewards.mean()) < 0.01 and abs(rewards.std() - 1.0) < 0.01
    result = runner.invoke(app, ["score", "--model", str(out), "--data", str(norm_data), "--output", str(tmp_path / "m.jsonl"),
                                 "--normalize", "--aggregate", "min"])  # fmt: skip
    assert result.exit_code == 1 and "aggregate min" in result.output  # the statistics are the mean aggregate's


def test_norm_samples_caps_the_responses(easy_data) -> None:
    from rewardlab.data.loading import load_preferences
    from rewardlab.rm_trainer.outputs import TRAINING_RESPONSES, normalization_sequences
    from rewardlab.train_rm import RewardTrainingConfig

    examples = load_preferences(str(easy_data / "small.jsonl")).examples
    tok = build_reward_model("tiny-llama").tokenizer
    cfg = RewardTrainingConfig(train_data="x", norm_samples=10)
    sequences, source = normalization_sequences(cfg, tok, examples)
    assert len(sequences) == 10 and source == TRAINING_RESPONSES
    again, _ = normalization_sequences(cfg, tok, examples)
    assert [s.input_ids for s in again] == [s.input_ids for s in sequences]  # drawn with the seed
    everything, _ = normalization_sequences(RewardTrainingConfig(train_data="x", norm_samples=0), tok, examples)
    assert len(everything) == 2 * len(examples)
    with pytest.raises(ValueError, match="norm_samples"):
        RewardTrainingConfig(train_data="x", norm_samples=1).validate()
