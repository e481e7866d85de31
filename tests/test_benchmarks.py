"""Smoke tests for the speed benchmarks (benchmarks/*.py): each main runs on a tiny setting and prints the agreed JSON.

No timing is asserted; the harness pieces that decide what is compared (data lengths, ratio of medians, the rotation of
contenders, packing and per-sequence attention of the compute limit) are checked against hand-computed values.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rewardlab.packed_attention import segment_attention

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

common = importlib.import_module("common")
QUICK = ["--quick", "--json", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The scripts' --threads sets torch's global thread count; give the rest of the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_fields(objects: list[dict], expected: set[str]) -> None:
    assert {o["benchmark"] for o in objects} == expected
    for o in objects:
        assert isinstance(o["ratio"], float) and o["ratio"] > 0
        assert o["better"] in ("higher", "lower")


# ----- harness -----
def test_examples_have_long_tailed_lengths_within_bounds():
    from rewardlab.data.templates import encode_prompt_response
    from rewardlab.modeling.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    examples = common.make_preference_examples(300, seed=1, min_tokens=20, max_tokens=400)
    lengths = [
        len(encode_prompt_response(tokenizer, ex.prompt, response).input_ids)
        for ex in examples
        for response in (ex.chosen, ex.rejected)
    ]
    assert min(lengths) >= 20 and max(lengths) <= 400
    lengths.sort()
    median, p95 = lengths[len(lengths) // 2], lengths[int(0.95 * len(lengths))]
    assert p95 > 2 * median  # long-tailed, not uniform
    assert examples[0].chosen != examples[0].rejected


def test_comparison_is_the_ratio_of_medians():
    runs = {name: [{"seconds": t} for t in times] for name, times in (("a", [1.0, 3.0, 2.0]), ("b", [4.0, 4.0, 1.0]))}
    result = common.comparison("x", runs, "a", "b", "lower", target=1.1)
    assert result["ratio"] == pytest.approx(2.0 / 4.0)
    assert result["paired_ratio_min"] == pytest.approx(0.25) and result["paired_ratio_max"] == pytest.approx(2.0)
    assert (result["benchmark"], result["better"], result["target"], result["repeats"]) == ("x", "lower", 1.1, 3)


def test_alternate_rotates_the_order_after_warmup():
    calls: list[str] = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    runs = common.alternate(contenders, repeats=3, warmup=1)
    assert calls == list("abc" + "abc" + "bca" + "cab")
    assert all(len(v) == 3 and "seconds" in v[0] for v in runs.values())


def test_pack_batch_and_segment_attention_match_per_sequence_attention():
    limit = importlib.import_module("limit")
    batch = {
        "input_ids": torch.tensor([[5, 6, 7], [8, 9, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    }
    packed = limit.pack_batch(batch)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["segment_lengths"] == [3, 2] and packed["last_index"].tolist() == [2, 4]

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    out, _ = segment_attention(None, q, k, v, None, scaling=0.5, segment_lengths=[3, 2])
    for start, end in ((0, 3), (3, 5)):  # naive causal softmax attention on each sequence alone
        scores = (q[:, :, start:end] @ k[:, :, start:end].transpose(-1, -2)) * 0.5
        causal = torch.ones(end - start, end - start, dtype=torch.bool).tril()
        expected = F.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v[:, :, start:end]
        torch.testing.assert_close(out[:, start:end], expected.transpose(1, 2))


# ----- each script's main on a tiny setting -----
def test_limit_main_prints_json(capsys):
    limit = importlib.import_module("limit")
    limit.main(QUICK)
    objects = json_lines(capsys.readouterr().out)
    check_fields(objects, {"limit", "limit_padded", "limit_padding_cost"})
    assert objects[0]["target"] == 1.15 and objects[0]["better"] == "lower"
    assert objects[0]["max_abs_reward_diff_packed"] < 1e-4  # the limit computes the same rewards


def test_grm_overhead_main_prints_json(capsys):
    grm = importlib.import_module("grm_overhead")
    grm.main(QUICK)
    objects = json_lines(capsys.readouterr().out)
    check_fields(objects, {"grm_overhead_sft", "grm_overhead_dpo_noref", "grm_overhead_dpo"})
    targets = {o["benchmark"]: o.get("target") for o in objects}
    assert targets == {"grm_overhead_sft": 1.15, "grm_overhead_dpo_noref": 1.2, "grm_overhead_dpo": None}


def test_rm_train_main_prints_json(capsys):
    pytest.importorskip("trl")
    rm_train = importlib.import_module("rm_train")
    rm_train.main([*QUICK, "--inline"])
    objects = json_lines(capsys.readouterr().out)
    check_fields(objects, {"rm_train", "rm_train_peak_memory"})
    speed = objects[0]
    assert speed["better"] == "higher" and speed["target"] == 1.3
    assert speed["real_tokens"] == speed["trl_real_tokens"]  # both trainers saw exactly the same tokens


def test_logprob_chunks_main_prints_json(capsys):
    chunks = importlib.import_module("logprob_chunks")
    chunks.main(["--quick", "--json", "--inline"])
    objects = json_lines(capsys.readouterr().out)
    check_fields(objects, {"logprob_chunks_peak_memory", "logprob_chunks_time"})
    assert all(o["better"] == "lower" and o["same_gradients"] for o in objects)  # chunking changes memory, not results


# ----- the suite -----
def test_suite_flops_by_hand():
    models = importlib.import_module("suite_models")
    config = models.model_config("cpu-tiny")  # hidden 64, 1 layer, 4 heads of 16, MLP 128, vocab 263
    n_body = models.body_parameters(config)
    # q, o: 64x64; k, v: 64x32 (2 key/value heads); gate, up, down: 64x128; two RMSNorms and the final norm: 64 each
    assert n_body == 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 3 * 64
    lengths = [10, 3]
    forward = sum(2 * n_body * n + 2 * 64 * n * n for n in lengths) + 2 * 64 * 263 * 5
    assert models.training_flops(config, lengths, lm_head_tokens=5) == 3 * forward
    assert models.training_flops(config, lengths, lm_head_tokens=5, forward_only=True) == forward


def test_suite_conversational_pairs_have_chat_structure():
    contenders = importlib.import_module("suite_contenders")
    examples = contenders.conversational_examples(20, seed=0)
    assert all(ex.is_conversational and ex.chosen[0]["role"] == "assistant" for ex in examples)
    assert {len(ex.prompt) for ex in examples} == {1, 3}  # one or two user turns
    assert examples[0].chosen != examples[0].rejected


def test_suite_quick_rows_name_device_attention_and_memory(capsys):
    """Three comparisons of the quick suite, each contender in its own process (as the suite always runs them)."""
    suite = importlib.import_module("suite")
    rows = suite.main(["--device", "cpu", "--quick", "--json", "--threads", "1", "--only",
                       "limit,token_rewards_vs_sequence,ppo_step"])  # fmt: skip
    printed = json_lines(capsys.readouterr().out)
    assert (
        [r["benchmark"] for r in printed] == ["limit", "token_rewards_vs_sequence", "ppo_step"] == [r["benchmark"] for r in rows]
    )
    check_fields(printed, {"limit", "token_rewards_vs_sequence", "ppo_step"})
    for r in printed:
        assert r["device"].endswith("CPU, 1 threads") and r["dtype"] == "fp32"
        assert r["attention"] == r["denominator_attention"] == "segments"  # the CPU default, on both sides
        assert r["kernel_fallbacks"] == r["denominator_kernel_fallbacks"] == {}  # no fast kernel failed its check
        assert r["tokens_per_second"] > 0 and r["peak_memory_mb"] >= 0 and r["mfu"] is None  # no CPU peak: no MFU
        assert r["ratio"] == pytest.approx(r["seconds"] / r["denominator_seconds"])
    assert printed[0]["model_tflops_per_second"] > 0 and printed[0]["target"] == 1.15
    assert printed[2]["same_responses"]  # r3hf and sparse PPO steps generated the same responses


def test_suite_reports_a_failed_contender_as_a_skipped_row():
    suite = importlib.import_module("suite")

    def failing(kind, contender, spec):
        return {"error": "RuntimeError: CUDA out of memory"} if contender == "b" else {"ok": {"seconds": 1.0}}

    measured = suite.measure(failing, "limit", ["a", "b"], {}, rounds=1, progress=lambda *a: None)
    assert measured["error"] == "limit:b: RuntimeError: CUDA out of memory"
    row = importlib.import_module("suite_report").skipped_row("limit", measured["error"], {"device": "cpu"})
    assert row["ratio"] is None and row["skipped"].endswith("out of memory")
