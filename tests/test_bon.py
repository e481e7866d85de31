"""Best-of-N runs (rewardlab.rl.bon): selection with injected scores checked by a naive loop, outputs, sample reuse, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rewardlab.commands.bon import bon, parse_proxies
from rewardlab.data.errors import DataError
from rewardlab.errors import UserError
from rewardlab.generation import load_samples
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.tiny import build_tiny_llama
from rewardlab.rl.bon import BonConfig, first_n_per_prompt, run_bon
from rewardlab.rl.scorers import FunctionScorer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: extra threads only add overhead

PROMPTS = [
    [{"role": "user", "content": "copy: abc"}],
    [{"role": "user", "content": "please reverse abcdefg"}],
    [{"role": "user", "content": "sort: hgf"}],
]
N = 6
GRID = [1, 2, 3, 4, 6]


class FixedScorer:
    """Returns preset scores (prompt-major), and records what it was asked to score."""

    def __init__(self, scores: np.ndarray):
        self.scores = scores
        self.calls: list[tuple[list, list[str]]] = []

    def score(self, prompts, responses) -> list[float]:
        self.calls.append((list(prompts), list(responses)))
        assert len(responses) == self.scores.size
        return self.scores.ravel().tolist()


def naive_curve(proxy: np.ndarray, gold: np.ndarray) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("proxy", "gold", "proxy_sem", "gold_sem")}
    for n in GRID:
        picked_proxy, picked_gold = [], []
        for p in range(proxy.shape[0]):
            best = 0
            for j in range(1, n):
                if proxy[p, j] > proxy[p, best]:  # strict: ties keep the first
                    best = j
            picked_proxy.append(proxy[p, best])
            picked_gold.append(gold[p, best])
        for key, values in (("proxy", picked_proxy), ("gold", picked_gold)):
            mean = sum(values) / len(values)
            out[key].append(mean)
            out[f"{key}_sem"].append(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)))
    return out


def gao_fit(d: list[float], r: list[float]) -> tuple[float, float]:
    """Normal equations for r = a d - b d^2 by hand."""
    s2 = sum(x**2 for x in d)
    s3 = sum(x**3 for x in d)
    s4 = sum(x**4 for x in d)
    t1 = sum(x * y for x, y in zip(d, r, strict=True))
    t2 = sum(x**2 * y for x, y in zip(d, r, strict=True))
    # [s2, -s3; -s3, s4] [a, b] = [t1, -t2]
    det = s2 * s4 - s3 * s3
    return (t1 * s4 - s3 * t2) / det, (s2 * -t2 + s3 * t1) / det


def bon_config(tmp_path, **overrides) -> BonConfig:
    values = dict(output_dir=str(tmp_path / "bon"), n=N, max_new_tokens=3, batch_size=8, progress=False)
    return BonConfig(**(values | overrides))


def test_bon_selection_with_injected_scores(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("rewardlab.rl.bon.resolve_prompts", lambda spec, **kwargs: PROMPTS)
    rng = np.random.default_rng(0)
    proxy_a = rng.integers(0, 4, size=(3, N)).astype(float)  # small integers: plenty of ties
    proxy_b = rng.normal(size=(3, N))
    gold = rng.normal(size=(3, N))
    scorers = {"vanilla": FixedScorer(proxy_a), "grm": FixedScorer(proxy_b)}
    result = run_bon(bon_config(tmp_path), policy=build_tiny_llama(seed=0), proxy_scorers=scorers, gold_scorer=FixedScorer(gold))
    # every scorer saw the samples prompt-major, with their texts
    samples = load_samples(tmp_path / "bon" / "samples.jsonl")
    prompts_seen, texts_seen = scorers["vanilla"].calls[0]
    assert texts_seen == samples.texts() and prompts_seen == [PROMPTS[i // N] for i in range(3 * N)]

    curves = json.loads((tmp_path / "bon" / "curves.json").read_text())
    assert curves == json.loads(json.dumps(result))
    assert curves["num_prompts"] == 3 and curves["samples_per_prompt"] == N and curves["selection"] == "first-n"
    for name, proxy in (("vanilla", proxy_a), ("grm", proxy_b)):
        curve = curves["curves"][name]
        expected = naive_curve(proxy, gold)
        assert curve["n"] == GRID
        assert curve["kl"] == pytest.approx([math.log(n) - (n - 1) / n for n in GRID], abs=1e-12)
        assert curve["d"] == pytest.approx([math.sqrt(math.log(n) - (n - 1) / n) for n in GRID], abs=1e-12)
        for key in ("proxy", "gold", "proxy_sem", "gold_sem"):
            assert curve[key] == pytest.approx(expected[key], abs=1e-12), key
        for key in ("proxy", "gold"):
            gains = [v - expected[key][0] for v in expected[key]]
            a, b = gao_fit(curve["d"], gains)
            assert curve["fit"][key]["a"] == pytest.approx(a, abs=1e-8)
            assert curve["fit"][key]["b"] == pytest.approx(b, abs=1e-8)
    assert curves["gold_mean"] == pytest.approx(gold.mean())
    texts = [samples.texts()[p * N : (p + 1) * N] for p in range(3)]
    assert curves["distinct_fraction"] == pytest.approx(np.mean([len(set(row)) / N for row in texts]))
    assert curves["top_response_share"] == pytest.approx(np.mean([max(row.count(t) for t in row) / N for row in texts]))
    for name in ("vanilla", "grm"):
        empirical = curves["curves"][name]["kl_empirical"]
        assert len(empirical) == len(GRID) and empirical[0] == 0.0
        assert all(e <= a + 1e-12 for e, a in zip(empirical, curves["curves"][name]["kl"], strict=True))

    scores = [json.loads(line) for line in (tmp_path / "bon" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 3 * N
    assert scores[N + 2] == {
        "prompt_index": 1,
        "sample_index": 2,
        "gold": gold[1, 2],
        "proxy/vanilla": proxy_a[1, 2],
        "proxy/grm": proxy_b[1, 2],
    }
    assert (tmp_path / "bon" / "bon_curves.png").stat().st_size > 0
    config = json.loads((tmp_path / "bon" / "config.json").read_text())
    assert config["n"] == N and config["sampling"]["temperature"] == 0.7


def test_bon_reuses_samples_and_scores_real_texts(tmp_path, monkeypatch) -> None:
    """Second run: samples come from the file (no policy is loaded), proxy = response length; picks checked by hand."""
    monkeypatch.setattr("rewardlab.rl.bon.resolve_prompts", lambda spec, **kwargs: PROMPTS)
    first = tmp_path / "first"
    length = FunctionScorer(lambda prompt, response: float(len(response)))
    gold = FunctionScorer(lambda prompt, response: float(response.count("a")))
    run_bon(
        bon_config(tmp_path, output_dir=str(first), max_new_tokens=5),
        policy=build_tiny_llama(seed=0),
        proxy_scorers={"len": length},
        gold_scorer=gold,
    )

    def fail(*args, **kwargs):
        raise AssertionError("the policy must not be loaded when --samples is given")

    monkeypatch.setattr("rewardlab.rl.bon.resolve_policy", fail)
    cfg = bon_config(tmp_path, output_dir=str(tmp_path / "second"), samples=str(first / "samples.jsonl"), n=4)
    result = run_bon(cfg, proxy_scorers={"len": length}, gold_scorer=gold)
    texts = load_samples(first / "samples.jsonl").texts()
    for i, n in enumerate(result["curves"]["len"]["n"]):
        golds = []
        for p in range(3):
            candidates = texts[p * N : p * N + n]  # the first n samples of prompt p
            best = max(range(n), key=lambda j: (len(candidates[j]), -j))
            golds.append(candidates[best].count("a"))
        assert result["curves"]["len"]["gold"][i] == pytest.approx(sum(golds) / 3)
    assert result["curves"]["len"]["n"] == [1, 2, 3, 4]
    assert len(load_samples(tmp_path / "second" / "samples.jsonl")) == 3 * 4


def test_first_n_per_prompt_needs_enough_samples(tmp_path) -> None:
    batch = load_samples_fixture(tmp_path)
    assert [s.prompt_index for s in first_n_per_prompt(batch, 1).samples] == [0, 1]
    with pytest.raises(DataError, match="prompt_index 1 has 1 samples"):
        first_n_per_prompt(batch, 2, "x.jsonl")


def load_samples_fixture(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = [(0, "a"), (1, "b"), (0, "c")]
    path.write_text(
        "".join(
            json.dumps(
                {"prompt": f"p{i}", "prompt_index": i, "prompt_ids": [1], "response_ids": [2], "finished": True, "text": t}
            )
            + "\n"
            for i, t in rows
        )
    )
    return load_samples(path)


def test_config_and_proxy_parsing() -> None:
    assert parse_proxies(["a=runs/x", "runs/grm"]) == {"a": "runs/x", "grm": "runs/grm"}
    with pytest.raises(UserError, match="duplicate"):
        parse_proxies(["a=x", "a=y"])
    with pytest.raises(ValueError, match="proxy"):
        BonConfig().validate()
    with pytest.raises(ValueError, match="--n 0: must be >= 1"):
        BonConfig(n=0, proxies={"a": "x"}).validate()


@pytest.fixture()
def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("bon")(bon)
    app.command("noop")(lambda: None)
    return app


def test_cli_bon(tmp_path, cli_app) -> None:
    for seed, name in ((0, "rm-a"), (1, "rm-b")):
        build_reward_model("tiny-llama", head_dropout=0.0, seed=seed).save_pretrained(tmp_path / name)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "out"
    args = [
        "bon", "--policy", "tiny-llama", "--proxy", f"vanilla={tmp_path / 'rm-a'}", "--proxy", f"grm={tmp_path / 'rm-b'}",
        "--gold", "builtin", "--prompts", str(prompts), "--n", "4", "--max-new-tokens", "3", "--output", str(out),
        "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves["curves"]) == {"vanilla", "grm"} and curves["curves"]["grm"]["n"] == [1, 2, 3, 4]
    assert "vanilla: gold" in result.output

    reuse = args[:-5] + ["--samples", str(out / "samples.jsonl"), "--output", str(tmp_path / "out2"), "--no-progress"]
    result = CliRunner().invoke(cli_app, reuse)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out2" / "curves.json").read_text())["curves"] == curves["curves"]

    result = CliRunner().invoke(cli_app, args[:-5] + ["--samples", str(tmp_path / "none.jsonl"), "--output", str(out)])
    assert result.exit_code == 1 and "none.jsonl" in result.output and "Traceback" not in result.output
    too_few = ["--n", "9", "--samples", str(out / "samples.jsonl"), "--output", str(tmp_path / "out3")]
    result = CliRunner().invoke(cli_app, args[:-5] + too_few)
    assert result.exit_code == 1 and "fewer than --n 9" in result.output
    # the samples' own directory as the output would overwrite them: refused before anything runs, the samples intact
    before = (out / "samples.jsonl").read_bytes()
    reused = ["--samples", str(out / "samples.jsonl"), "--output", str(out), "--overwrite"]
    result = CliRunner().invoke(cli_app, args[:-5] + reused)
    assert result.exit_code == 1 and "input" in result.output and (out / "samples.jsonl").read_bytes() == before
