"""score_completions / render_html / `rewardlab score` with the built-in tiny-llama reward model."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from rewardlab.commands.score import config_path, score
from rewardlab.data.templates import encode_prompt_response
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.service import response_token_texts
from rewardlab.scoring import render_html, score_completions

ITEMS = [
    ("What is 2 + 2?", " It is 4."),
    ("Write a haiku about rain.", " Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky"),
    ([{"role": "user", "content": "Say hi in French."}], [{"role": "assistant", "content": "Salut ! Ça va ?"}]),
    ("x", " y"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], "Blue 🙂"),
]


@pytest.fixture(scope="module")
def rm():
    model = build_reward_model("tiny-llama", seed=0)
    model.head.dropout.p = 0.0  # eval() below disables it anyway
    return model.eval()


@torch.no_grad()
def score_each_prefix(rm, ids: list[int], response_start: int) -> tuple[float, list[float]]:
    """Independent R3HF: every prefix x, x y1, ..., x y1..yn scored as its own sequence (one row each, the model's
    own sequence reward at the row's last token), then differenced."""
    lengths = range(response_start, len(ids) + 1)
    prefixes = torch.zeros(len(lengths), len(ids), dtype=torch.long)
    mask = torch.zeros_like(prefixes)
    for row, end in enumerate(lengths):
        prefixes[row, :end] = torch.tensor(ids[:end])
        mask[row, :end] = 1
    values = rm(prefixes, mask).sequence_rewards.tolist()
    return values[0], [b - a for a, b in zip(values[:-1], values[1:], strict=True)]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_r3hf_matches_scoring_each_prefix_separately(rm, padding_side: str) -> None:
    results = score_completions(rm, ITEMS[:4], token_rewards="r3hf", batch_size=3, padding_side=padding_side)
    for (prompt, response), result in zip(ITEMS[:4], results, strict=True):
        encoded = encode_prompt_response(rm.tokenizer, prompt, response)
        prompt_value, per_prefix = score_each_prefix(rm, encoded.input_ids, encoded.response_start)
        assert result.prompt_reward == pytest.approx(prompt_value, abs=1e-4)
        assert result.token_rewards == pytest.approx(per_prefix, abs=1e-4)
        assert len(result.tokens) == len(result.token_rewards) == len(encoded.input_ids) - encoded.response_start


def test_token_rewards_sum_to_reward_minus_prompt_reward_on_every_row(rm) -> None:
    results = score_completions(rm, ITEMS, token_rewards="r3hf", batch_size=2)
    for r in results:
        assert abs(sum(r.token_rewards) - (r.reward - r.prompt_reward)) < 1e-4


def test_batching_sorting_and_padding_do_not_change_scores(rm) -> None:
    one_by_one = score_completions(rm, ITEMS, token_rewards="r3hf", batch_size=1)
    batched = score_completions(rm, ITEMS, token_rewards="r3hf", batch_size=4, padding_side="left")
    for a, b in zip(one_by_one, batched, strict=True):
        assert (a.prompt, a.response) == (b.prompt, b.response)  # input order restored after length sorting
        assert a.reward == pytest.approx(b.reward, abs=1e-5)
        assert a.token_rewards == pytest.approx(b.token_rewards, abs=1e-5)
    plain = score_completions(rm, ITEMS, batch_size=4)
    assert [r.reward for r in plain] == pytest.approx([r.reward for r in one_by_one], abs=1e-5)
    assert all(r.tokens is None and r.token_rewards is None for r in plain)


def test_other_methods_through_one_forward_pass(rm) -> None:
    sparse, uniform, abc = (
        score_completions(rm, ITEMS, token_rewards=method, batch_size=3) for method in ("sparse", "uniform", "abc")
    )
    for s, u, a in zip(sparse, uniform, abc, strict=True):
        assert s.token_rewards[:-1] == [0.0] * (len(s.token_rewards) - 1)
        assert s.token_rewards[-1] == pytest.approx(s.reward)
        assert u.token_rewards == pytest.approx([u.reward / len(u.tokens)] * len(u.tokens))
        assert sum(a.token_rewards) == pytest.approx(a.reward, abs=1e-5)
        # ABC weights are attention probabilities: every share has the sign of R, the last token gets the most extra.
        shares = [v / a.reward for v in a.token_rewards]
        assert min(shares) >= -1e-6 and shares[-1] >= 0.2 - 1e-6


def test_truncation_keeps_the_end_and_the_sum_property(rm) -> None:
    results = score_completions(rm, ITEMS[1:2], token_rewards="r3hf", max_length=20)
    (r,) = results
    assert r.truncated
    assert "".join(r.tokens).endswith("the sky</s>")
    assert abs(sum(r.token_rewards) - (r.reward - r.prompt_reward)) < 1e-4


def test_token_texts_join_to_the_decoded_response(rm) -> None:
    ids = rm.tokenizer("Ça va ? 🙂 naïve</s>", add_special_tokens=False)["input_ids"]
    pieces = response_token_texts(rm.tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == "Ça va ? 🙂 naïve</s>"
    assert "\ufffd" not in "".join(pieces)
    assert pieces[-1] == "</s>"


def test_token_texts_of_a_response_cut_inside_a_character(rm) -> None:
    """A response truncated mid-character (max_new_tokens hit inside an emoji) used to loop forever: the last tokens
    cannot complete a character, and each must still get its (replacement) text."""
    emoji = rm.tokenizer("ok 🙂", add_special_tokens=False)["input_ids"]
    assert len(emoji) == 3 + 4  # byte-level: 'o', 'k', ' ', then 4 bytes
    for cut in (1, 2, 3):  # 1-3 of the emoji's 4 bytes
        ids = emoji[: 3 + cut]
        pieces = response_token_texts(rm.tokenizer, ids)
        assert len(pieces) == len(ids) and pieces[:3] == ["o", "k", " "]
        assert all(p == "\ufffd" for p in pieces[3:])
    # a broken byte in the middle: it gets a replacement character, the rest is unaffected
    ids = emoji[:4] + rm.tokenizer(" fine", add_special_tokens=False)["input_ids"]
    assert "".join(response_token_texts(rm.tokenizer, ids)) == "ok \ufffd fine"


def test_render_html_escapes_and_colours(rm, tmp_path) -> None:
    items = [("<b>prompt</b>", " <script>alert(1)</script>"), ("a", " b")]
    results = score_completions(rm, items, token_rewards="r3hf")
    path = tmp_path / "tokens.html"
    render_html(results, path)
    page = path.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>" not in page and "&lt;b&gt;prompt&lt;/b&gt;" in page
    assert '">&lt;</span>' in page  # the response's "<" token, escaped inside its span
    assert page.count('class="tok"') == sum(len(r.tokens) for r in results)
    assert 'class="legend"' in page
    # The token with the largest |reward| is drawn at the saturated end of the scale.
    biggest = max((abs(v), v) for r in results for v in r.token_rewards)[1]
    assert ("rgb(178,24,43)" if biggest < 0 else "rgb(33,102,172)") in page


# --- the CLI -------------------------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(score)

    @app.callback()
    def main() -> None:  # a callback keeps `score` as a named subcommand
        pass

    return app


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_cli_writes_rows_config_and_html(rm, tmp_path) -> None:
    data = tmp_path / "completions.jsonl"
    write_rows(
        data,
        [
            {"prompt": "What is 2 + 2?", "completion": " It is 4.", "id": "a"},
            {"prompt": [{"role": "user", "content": "hi"}], "response": [{"role": "assistant", "content": "hello"}]},
            {"prompt": "x", "completion": " y"},
        ],
    )
    output, html = tmp_path / "out" / "scores.jsonl", tmp_path / "scores.html"
    args = ["score", "--model", "tiny-llama", "--data", str(data), "--output", str(output), "--no-progress"]
    result = CliRunner().invoke(cli(), [*args, "--token-rewards", "r3hf", "--html", str(html), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 3
    assert set(rows[0]) >= {"prompt", "response", "reward", "prompt_reward", "tokens", "token_rewards"}
    assert rows[0]["metadata"] == {"id": "a"}
    # Same numbers as the library call (tiny-llama is seeded), and the telescoping sum on every row.
    expected = score_completions(rm, [("What is 2 + 2?", " It is 4.")], token_rewards="r3hf")[0]
    assert rows[0]["reward"] == pytest.approx(expected.reward, abs=1e-5)
    assert rows[0]["token_rewards"] == pytest.approx(expected.token_rewards, abs=1e-5)
    for row in rows:
        assert abs(sum(row["token_rewards"]) - (row["reward"] - row["prompt_reward"])) < 1e-4
    config = json.loads(config_path(output).read_text())
    assert config_path(output).name == "scores.config.json"
    assert config["config"]["token_rewards"] == "r3hf" and config["summary"]["rows"] == 3
    assert config["summary"]["mean_reward"] == pytest.approx(sum(r["reward"] for r in rows) / 3)
    assert 0 <= config["summary"]["max_abs_sum_gap"] < 1e-4
    assert html.exists()


def test_cli_sequence_only_and_errors(tmp_path) -> None:
    data = tmp_path / "bad.jsonl"
    write_rows(data, [{"prompt": "fine", "completion": " ok"}, {"prompt": "no completion here"}])
    output = tmp_path / "scores.jsonl"
    base = ["score", "--model", "tiny-llama", "--output", str(output), "--no-progress"]
    result = CliRunner().invoke(cli(), [*base, "--data", str(data)])
    assert result.exit_code == 1
    assert "bad.jsonl:2" in result.output and "Traceback" not in result.output
    assert not output.exists()

    result = CliRunner().invoke(cli(), [*base, "--data", str(data), "--limit", "1"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert row["tokens"] is None and row["token_rewards"] is None
    assert json.loads(config_path(output).read_text())["summary"]["max_abs_sum_gap"] is None

    result = CliRunner().invoke(cli(), [*base, "--data", str(data), "--token-rewards", "nope"])
    assert result.exit_code != 0 and "--token-rewards" in result.output

    missing = tmp_path / "no-such-model"
    args = ["score", "--model", str(missing), "--data", str(data), "--limit", "1", "--output", str(tmp_path / "other.jsonl")]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 1 and "no-such-model" in result.output and "Traceback" not in result.output
