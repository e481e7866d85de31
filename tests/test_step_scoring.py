"""Step views (rewardlab.step_scoring): r3hf step rewards telescope to `score`'s reward - prompt_reward and split the
response at the right tokens (byte tokenizer, SmolLM2's BPE with boundaries inside tokens, tokenizers without offsets);
a PRM's step scores are the head at each step's end from one forward pass; the async entry gives the same numbers."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from helpers import WithoutOffsets
from rewardlab.data.step_encoding import encode_steps
from rewardlab.data.steps import separator_from_flag
from rewardlab.data.templates import EncodedSequence
from rewardlab.errors import UserError
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.service import ScoringService, TokenRewardSettings, response_token_texts
from rewardlab.step_scoring import (
    StepScores,
    load_step_inputs,
    max_telescoping_gap,
    plan_r3hf,
    request_steps,
    score_step_request,
    score_steps,
    score_steps_async,
    sigmoid,
    split_steps,
    step_rows,
    step_summary,
    steps_prompt,
    steps_response,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = [
    ("Q: Tom has 3 apples and buys 5. How many?\n", ["3 + 5 = 8.", "Ünïcödé ∑ 😊 fine.", "The answer is 8."]),
    ([{"role": "user", "content": "How many apples?"}], ["Tom has 3.", "", "He has 8."]),
    ("x", ["only one step"]),
    ("", [""]),
]


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", head_dropout=0.0, seed=1).eval()


@pytest.fixture(scope="module")
def smollm2_rm():
    return build_reward_model("smollm2-135m", head_dropout=0.0, seed=1).eval()


def score_rows(service: ScoringService, items, separator: str = "\n"):
    """What `rewardlab score` reports for each (prompt, steps joined by the separator)."""
    return service.score([(prompt, steps_response(steps, separator)) for prompt, steps in items], TokenRewardSettings())


# ----------------------------------------------------------------------------------------------------------------------
# r3hf


def test_r3hf_step_rewards_telescope_to_score_on_tiny_llama(rm) -> None:
    service = ScoringService(rm, batch_size=3)
    got = score_steps(service, ITEMS, "r3hf")
    for (_, steps), scored, row in zip(ITEMS, got, score_rows(service, ITEMS), strict=True):
        assert len(scored.step_rewards) == len(steps)
        assert scored.reward == row.reward and scored.prompt_reward == row.prompt_reward  # the same pass as `score`
        assert math.fsum(scored.step_rewards) == pytest.approx(row.reward - row.prompt_reward, abs=1e-4)
    assert max_telescoping_gap(got) < 1e-5


def test_r3hf_tokens_of_each_step_are_its_text_byte_tokenizer(rm) -> None:
    """The tokens given to step k spell `step_k + separator` (the last step: its text, then EOS)."""
    service = ScoringService(rm)
    tok = service.tokenizer
    prompt, steps = ITEMS[0]
    plan = plan_r3hf(service, prompt, steps, " | ")
    texts = response_token_texts(tok, plan.sequence.input_ids[plan.sequence.response_start :])
    spelled = ["".join(t for t, s in zip(texts, plan.token_steps, strict=True) if s == k) for k in range(len(steps))]
    assert spelled == [steps[0] + " | ", steps[1] + " | ", steps[2] + tok.eos_token]
    assert plan.token_steps == sorted(plan.token_steps)


def test_r3hf_step_reward_is_the_change_in_reward_over_the_step(rm) -> None:
    """Step k's reward = R(x, y up to step k's last token) - R(x, y up to step k-1's last token), read independently
    from the position rewards of one pass."""
    service = ScoringService(rm)
    prompt, steps = ITEMS[0]
    plan = plan_r3hf(service, prompt, steps)
    (positions,) = service.score_encoded([plan.sequence], view=lambda b: [b.rewards_at(0, range(len(plan.sequence.input_ids)))])
    start = plan.sequence.response_start
    lasts = [start + max(i for i, s in enumerate(plan.token_steps) if s == k) for k in range(len(steps))]
    before = [start - 1, *lasts[:-1]]  # the prompt's last token, then each earlier step's last token
    expected = [positions[b] - positions[a] for a, b in zip(before, lasts, strict=True)]
    (got,) = score_steps(service, [(prompt, steps)], "r3hf")
    assert got.step_rewards == pytest.approx(expected, abs=1e-5)


def test_r3hf_boundaries_inside_bpe_tokens_smollm2(smollm2_rm) -> None:
    """SmolLM2 merges the separator " " with the next word (" is"): such a token straddles the boundary and belongs to
    the later step; the sums still telescope to `score`'s numbers."""
    service = ScoringService(smollm2_rm, batch_size=2)
    tok = service.tokenizer
    items = [("What is 2 + 2? ", ["The answer", "is 4", "because 2 + 2 = 4."])]
    plan = plan_r3hf(service, *items[0], " ")
    texts = response_token_texts(tok, plan.sequence.input_ids[plan.sequence.response_start :])
    first_of = {k: texts[plan.token_steps.index(k)] for k in (1, 2)}
    assert first_of == {1: " is", 2: " because"}  # the separator's space is inside the later step's first token
    (got,) = score_steps(service, items, "r3hf", separator=" ")
    (row,) = score_rows(service, items, " ")
    assert math.fsum(got.step_rewards) == pytest.approx(row.reward - row.prompt_reward, abs=1e-4)


def test_r3hf_telescopes_on_smollm2_string_and_chat(smollm2_rm) -> None:
    service = ScoringService(smollm2_rm, batch_size=2)
    items = [
        ("Tom has 3 apples and buys 5.\n", ["3 + 5 = 8.", "So he has 8 apples."]),
        ([{"role": "user", "content": "3 + 5?"}], ["3 + 5 = 8.", "The answer is 8."]),
    ]
    got = score_steps(service, items, "r3hf")
    for scored, row in zip(got, score_rows(service, items), strict=True):
        assert math.fsum(scored.step_rewards) == pytest.approx(row.reward - row.prompt_reward, abs=1e-4)
    # the chat turn's closing ("<|im_end|>\n") goes to the last step
    plan = plan_r3hf(service, *items[1])
    texts = response_token_texts(service.tokenizer, plan.sequence.input_ids[plan.sequence.response_start :])
    last = "".join(t for t, s in zip(texts, plan.token_steps, strict=True) if s == 1)
    assert last == "The answer is 8.<|im_end|>\n"


def test_r3hf_plan_without_offsets_is_the_same(rm, smollm2_rm) -> None:
    cases = [(rm, ITEMS, "\n"), (smollm2_rm, [("What is 2 + 2? ", ["The answer", "is 4", "because 4."])], " ")]
    for model, items, separator in cases:
        service = ScoringService(model)
        slow = ScoringService(model)
        slow.rm = type("Wrapped", (), {"tokenizer": WithoutOffsets(model.tokenizer)})()
        for prompt, steps in items:
            assert plan_r3hf(slow, prompt, steps, separator) == plan_r3hf(service, prompt, steps, separator)


def test_r3hf_truncation_keeps_the_end_and_still_telescopes(rm) -> None:
    service = ScoringService(rm, max_length=24)
    items = [("A long prompt that will be cut away. ", ["one two", "three"]), ("P", ["a long first step here", "b"])]
    got = score_steps(service, items, "r3hf")
    for scored, row in zip(got, service.score([(p, steps_response(s)) for p, s in items]), strict=True):
        assert scored.truncated and row.truncated
        assert math.fsum(scored.step_rewards) == pytest.approx(row.reward - row.prompt_reward, abs=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# prm


def test_prm_step_scores_are_the_head_at_each_step_end_from_one_pass(rm) -> None:
    service = ScoringService(rm, batch_size=8)
    passes = []
    forward = service.forward
    service.forward = lambda *a, **k: passes.append(1) or forward(*a, **k)  # type: ignore[method-assign]
    got = score_steps(service, ITEMS, "prm")
    assert len(passes) == 1  # every item in one batch: one forward pass
    service.forward = forward  # type: ignore[method-assign]
    for (prompt, steps), scored in zip(ITEMS, got, strict=True):
        enc = encode_steps(rm.tokenizer, prompt, steps)
        ends = enc.step_ends
        (alone,) = service.score_encoded(
            [EncodedSequence(enc.input_ids, enc.response_start)], view=lambda b, ends=ends: [b.rewards_at(0, ends)]
        )
        assert scored.step_rewards == pytest.approx(alone, abs=1e-5)
        assert scored.step_probabilities == [sigmoid(x) for x in scored.step_rewards]
        assert scored.n_steps == len(steps) and not scored.truncated
        row = scored.to_row()
        assert row["aggregations"]["product"] == pytest.approx(math.prod(row["step_probabilities"]))
        assert row["aggregations"]["min"] == min(row["step_probabilities"])


def test_prm_truncation_keeps_whole_steps(rm) -> None:
    service = ScoringService(rm, max_length=40)
    (scored,) = score_steps(service, [("Q?", ["first step", "second step", "third step is long"])], "prm")
    assert scored.truncated and scored.n_steps == 3 and len(scored.step_rewards) == 2
    with pytest.raises(UserError, match="item 0: the prompt and the first step are over max_length 40"):
        score_steps(service, [("Q" * 50, ["a"])], "prm")


# ----------------------------------------------------------------------------------------------------------------------
# aggregations, helpers, the async entry


def test_aggregations_per_view() -> None:
    prm = StepScores("prm", [0.0, math.log(3.0)], 2)
    assert prm.step_probabilities == pytest.approx([0.5, 0.75])
    assert prm.aggregations() == pytest.approx({"min": 0.5, "last": 0.75, "product": 0.375, "mean": 0.625})
    r3hf = StepScores("r3hf", [0.5, -1.5], 2, reward=1.0, prompt_reward=2.0)
    assert r3hf.step_probabilities is None
    assert r3hf.aggregations() == {"min": -1.5, "last": -1.5, "product": None, "mean": -0.5}
    assert max_telescoping_gap([r3hf]) == 0.0 and max_telescoping_gap([prm]) is None
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0


def test_text_helpers() -> None:
    assert split_steps("a\n\nb") == ["a", "", "b"] and steps_response(["a", "", "b"]) == "a\n\nb"
    assert steps_prompt("Q") == "Q\n" and steps_prompt("Q\n") == "Q\n" and steps_prompt("") == ""
    assert separator_from_flag("\\n") == "\n" and separator_from_flag("\\n\\t|\\\\") == "\n\t|\\"
    assert separator_from_flag("é \\x") == "é \\x"  # anything else as written
    messages = [{"role": "user", "content": "Q"}]
    assert steps_prompt(messages) is messages
    with pytest.raises(UserError, match="separator must not be empty"):
        split_steps("a", "")
    with pytest.raises(UserError, match="--step-rewards 'orm'"):
        score_steps(ScoringService(object()), [("Q", ["a"])], "orm")


def test_async_entry_gives_the_same_numbers_and_shares_passes(rm) -> None:
    service = ScoringService(rm, batch_size=16)
    want = {view: score_steps(service, ITEMS, view) for view in ("prm", "r3hf")}
    sequences = [service.encode("Q", " a")]

    async def together():
        results = await asyncio.gather(
            score_steps_async(service, ITEMS, "prm"),
            score_steps_async(service, ITEMS, "r3hf"),
            service.score_async(sequences),
        )
        await service.batcher().stop()
        return results, service.batcher().batches_run

    (prm, r3hf, (plain,)), passes = asyncio.run(together())
    # each caller's items share one pass (9 sequences, batch size 16); the plans are built in threads, so whether
    # the callers also share passes depends on when each one queues
    assert passes <= 3
    for got, expected in ((prm, want["prm"]), (r3hf, want["r3hf"])):
        for a, b in zip(got, expected, strict=True):
            assert a.step_rewards == pytest.approx(b.step_rewards, abs=1e-5)
    assert plain.reward == pytest.approx(service.score_encoded(sequences)[0].reward, abs=1e-5)


def test_step_requests_as_the_server_reads_them(rm) -> None:
    service = ScoringService(rm)
    assert request_steps({"prompt": "Q", "response": "a\nb"}, "\n") == ("Q", ["a", "b"])
    assert request_steps({"prompt": "Q", "steps": ["a", "b"]}, "\n") == ("Q", ["a", "b"])
    for bad, message in [
        ({"prompt": "Q"}, "give prompt and steps"),
        ({"prompt": "Q", "steps": ["a"], "response": "a"}, "give prompt and steps"),
        ({"prompt": "Q", "steps": []}, "non-empty list of strings"),
        ({"prompt": "Q", "response": 3}, "expected a string"),
    ]:
        with pytest.raises(UserError, match=message):
            request_steps(bad, "\n")
    rows = asyncio.run(score_step_request(service, [{"prompt": "Q", "response": "a\nb"}], "r3hf"))
    (want,) = score_steps(service, [("Q", ["a", "b"])], "r3hf")
    assert rows[0]["step_rewards"] == pytest.approx(want.step_rewards, abs=1e-6) and rows[0]["n_steps"] == 2
    with pytest.raises(UserError, match="items.1: give prompt"):
        asyncio.run(score_step_request(service, [{"prompt": "Q", "steps": ["a"]}, {"prompt": "Q"}], "prm"))


# ----------------------------------------------------------------------------------------------------------------------
# step files (`score --step-rewards`)

DATA = Path(__file__).parent / "fixtures" / "data"


def test_load_step_inputs_from_step_files_and_completion_rows() -> None:
    inputs, fmt = load_step_inputs(str(DATA / "trl_stepwise.jsonl"), "r3hf")
    assert fmt == "trl-stepwise" and inputs[0].prompt == "Which number is larger, 9.8 or 9.11?\n"  # steps_prompt
    assert inputs[0].steps == ["11 is greater than 8.", "Hence, 9.11 > 9.8."]
    assert inputs[0].metadata["labels"] == [True, False] and inputs[2].metadata["subset"] == "algebra"
    prm_inputs, _ = load_step_inputs(str(DATA / "trl_stepwise.jsonl"), "prm")
    assert prm_inputs[0].prompt == "Which number is larger, 9.8 or 9.11?"  # the PRM encoding adds the separator itself
    inputs, fmt = load_step_inputs(str(DATA / "processbench_real.json"), "prm", limit=2)
    assert fmt == "processbench" and len(inputs) == 2 and inputs[0].metadata["id"] == "gsm8k-126"
    inputs, fmt = load_step_inputs(str(DATA / "completions.jsonl"), "r3hf", separator="!")
    assert fmt == "prompt-completion" and inputs[0].prompt == "Say hi." and inputs[0].steps == [" Hi", ""]
    assert inputs[2].steps == ["Hi, how can I help?"] and inputs[0].metadata == {"id": 1}  # one assistant message
    with pytest.raises(UserError, match="separator must not be empty"):
        load_step_inputs(str(DATA / "completions.jsonl"), "r3hf", separator="")


def test_step_rows_and_summary(rm) -> None:
    service = ScoringService(rm)
    inputs, fmt = load_step_inputs(str(DATA / "completions.jsonl"), "r3hf", separator=" ")
    scores = score_steps(service, [(i.prompt, i.steps) for i in inputs], "r3hf", separator=" ")
    rows = step_rows(inputs, scores)
    want = service.score([(i.prompt, steps_response(i.steps, " ")) for i in inputs], TokenRewardSettings())
    for row, result in zip(rows, want, strict=True):  # `rewardlab score` on the same row: the same reward
        assert row["reward"] == result.reward and row["prompt_reward"] == result.prompt_reward
        assert math.fsum(row["step_rewards"]) == pytest.approx(result.reward - result.prompt_reward, abs=1e-4)
    summary = step_summary(scores, "r3hf", fmt, " ")
    assert summary["rows"] == len(rows) and summary["max_abs_sum_gap"] < 1e-4
    assert summary["mean_aggregations"]["product"] is None and summary["step_format"] == "prompt-completion"


# ----------------------------------------------------------------------------------------------------------------------
# `rewardlab score --step-rewards`


def cli(*args: str):
    from typer.testing import CliRunner

    from rewardlab.cli import app

    return CliRunner().invoke(app, [*args, "--no-progress"])


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_cli_r3hf_step_rewards_telescope_to_score(tmp_path) -> None:
    """`score --step-rewards r3hf` on ProcessBench rows: each row's step rewards sum to the reward - prompt_reward that
    plain `score` reports for (prompt, steps joined by the separator), which the row also carries."""
    out = tmp_path / "steps.jsonl"
    data = str(DATA / "processbench_real.json")
    result = cli("score", "--model", "tiny-llama", "--data", data, "--output", str(out), "--step-rewards", "r3hf")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert len(rows) == 8 and "max |sum(step rewards) - (reward - prompt reward)|" in result.output
    completions = tmp_path / "joined.jsonl"
    completions.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": "\n".join(r["steps"])}) + "\n" for r in rows))
    plain = tmp_path / "plain.jsonl"
    assert cli("score", "--model", "tiny-llama", "--data", str(completions), "--output", str(plain)).exit_code == 0
    for row, want in zip(rows, read_jsonl(plain), strict=True):
        assert row["prompt"].endswith("\n") and row["step_view"] == "r3hf"
        assert row["reward"] == want["reward"] and row["prompt_reward"] == want["prompt_reward"]
        assert math.fsum(row["step_rewards"]) == pytest.approx(want["reward"] - want["prompt_reward"], abs=1e-4)
        assert row["metadata"]["id"] and "labels" in row["metadata"]
    config = json.loads((tmp_path / "steps.config.json").read_text())
    assert config["config"]["step_rewards"] == "r3hf" and config["config"]["step_separator"] == "\n"
    assert config["summary"]["step_format"] == "processbench" and config["summary"]["max_abs_sum_gap"] < 1e-4


def test_cli_prm_step_rewards_and_refusals(tmp_path) -> None:
    out = tmp_path / "prm.jsonl"
    data = str(DATA / "trl_stepwise.jsonl")
    result = cli("score", "--model", "tiny-llama", "--data", data, "--output", str(out), "--step-rewards", "prm")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    for row in rows:  # one score per step
        assert len(row["step_rewards"]) == len(row["steps"]) == len(row["step_probabilities"]) == row["n_steps"]
        assert set(row["aggregations"]) == {"min", "last", "product", "mean"}
    typed = tmp_path / "typed.jsonl"  # "\\n" as a shell passes it (a backslash and an n) is the newline
    assert cli("score", "--model", "tiny-llama", "--data", data, "--output", str(typed), "--step-rewards", "prm",
               "--step-separator", "\\n").exit_code == 0  # fmt: skip
    assert read_jsonl(typed) == rows
    completions = str(DATA / "completions.jsonl")
    args = ["score", "--model", "tiny-llama", "--data", completions, "--output", str(tmp_path / "x.jsonl")]
    assert cli(*args, "--step-rewards", "prm", "--step-separator", " ").exit_code == 0
    for extra, message in [
        (["--step-rewards", "orm"], "orm"),
        (["--step-rewards", "prm", "--token-rewards", "r3hf"], "--token-rewards"),
        (["--step-rewards", "prm", "--html", str(tmp_path / "x.html")], "--html"),
        (["--step-rewards", "prm", "--step-separator", ""], "separator"),
    ]:
        refused = cli(*args, "--overwrite", *extra)
        assert refused.exit_code != 0 and message in refused.output, refused.output
