"""The CLI as a user drives it: train-rm, eval-rm, export, data; errors are one line with a non-zero exit."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.templates import encode_prompt_response, pad_sequences
from rewardlab.modeling.loader import load_reward_model
from rewardlab.runtime import OUTPUT_MARKER

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(easy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    config = out.parent / "rm.yaml"
    config.write_text(f"train_data: {easy_data / 'small.jsonl'}\nreg: sft\nlearning_rate: 0.003\nhead_dropout: 0.0\n")
    result = runner.invoke(
        app,
        [
            "train-rm",
            "--config",
            str(config),
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--output-dir",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_rm_flags_override_config_file(trained):
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["reg"] == "sft" and cfg["learning_rate"] == 0.003  # from the file
    assert cfg["max_steps"] == 4 and cfg["per_device_train_batch_size"] == 8  # from flags


def test_eval_rm_writes_results_and_scores(trained, easy_data, tmp_path):
    out, scores = tmp_path / "results.json", tmp_path / "scores.jsonl"
    result = runner.invoke(
        app,
        ["eval-rm", "--model", str(trained), "--data", f"id={easy_data / 'test.jsonl'}", "--data",
         f"small={easy_data / 'small.jsonl'}", "--output", str(out), "--scores", str(scores), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"id", "small"} and results["id"]["n"] == 300
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 300 + 48
    id_rows = [r for r in rows if r["dataset"] == "id"]
    acc = sum((r["chosen_reward"] > r["rejected_reward"]) + 0.5 * (r["chosen_reward"] == r["rejected_reward"]) for r in id_rows)
    assert acc / len(id_rows) == pytest.approx(results["id"]["accuracy"])
    assert "per_subset" in results["id"] and set(results["id"]["per_subset"]) == {
        "easy/copy",
        "easy/reverse",
        "easy/sort",
    }


def test_export_loads_in_plain_transformers_and_matches(trained, tmp_path):
    result = runner.invoke(app, ["export", "--model", str(trained), "--output", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert classifier.config.num_labels == 1
    rm = load_reward_model(trained)
    tok = rm.tokenizer
    seqs = [
        encode_prompt_response(tok, [{"role": "user", "content": "copy: abc"}], "abc"),
        encode_prompt_response(tok, [{"role": "user", "content": "sort: hgfedcba"}], "abcdxfgh"),
        encode_prompt_response(tok, "plain text prompt", "and a plain response"),
    ]
    for side in ("right", "left"):
        ids, mask, _ = pad_sequences(seqs, tok.pad_token_id, side)
        with torch.no_grad():
            ours = rm(ids, mask).sequence_rewards
            theirs = classifier(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_export_refuses_the_mlp_head(easy_data, tmp_path):
    out = tmp_path / "mlp"
    args = [
        "train-rm",
        "--train-data",
        str(easy_data / "small.jsonl"),
        "--head",
        "mlp",
        "--max-steps",
        "1",
        "--output-dir",
    ]
    assert runner.invoke(app, [*args, str(out), "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["export", "--model", str(out), "--output", str(tmp_path / "hf")])
    assert result.exit_code == 1
    assert "mlp" in result.output and "Traceback" not in result.output


def test_bad_data_is_one_line_naming_file_line_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}) + "\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train-rm", "--train-data", str(bad), "--output-dir", str(out), "--max-steps", "1"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.jsonl:2" in lines[0] and "rejected" in lines[0], result.output
    assert not out.exists()  # nothing half-written
    # --skip-invalid skips and counts it
    result = runner.invoke(
        app,
        [
            "train-rm",
            "--train-data",
            str(bad),
            "--skip-invalid",
            "--output-dir",
            str(out),
            "--max-steps",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train_data_stats"]["invalid"] == 1


def test_unknown_choice_is_a_clear_error(easy_data, tmp_path):
    result = runner.invoke(
        app, ["train-rm", "--train-data", str(easy_data / "small.jsonl"), "--reg", "ppo", "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and "reg = 'ppo' is not one of" in result.output


def test_data_easy_and_inspect(tmp_path):
    assert runner.invoke(app, ["data", "easy", "--output-dir", str(tmp_path), "--n-train", "20", "--n-test", "5"]).exit_code == 0
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "train.jsonl")])
    assert result.exit_code == 0 and "format trl" in result.output and "loaded 20" in result.output


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


def test_eval_rm_reads_every_supported_format(trained, tmp_path):
    """Real-world layouts: HH transcripts (gzipped JSONL), Unified-Feedback, HHH (JSON), MT-Bench (parquet), RewardBench (CSV)."""
    specs = {
        "hh": "hh.jsonl.gz",
        "uf": "unified_feedback.jsonl",
        "hhh": "hhh.json",
        "mtb": "mt_bench_human.parquet",
        "rb": "rewardbench.csv",
        "trl": "trl_conversational.jsonl",
    }
    args = ["eval-rm", "--model", str(trained), "--output", str(tmp_path / "r.json"), "--no-progress"]
    for name, file in specs.items():
        args += ["--data", f"{name}={FIXTURES / file}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(results) == set(specs)
    for name, metrics in results.items():
        assert metrics["n"] >= 1 and 0.0 <= metrics["accuracy"] <= 1.0, name
    assert results["uf"]["data"]["excluded"] >= 1  # the tie is dropped, not counted
    assert results["mtb"]["data"]["excluded"] >= 1
    assert "rewardbench" in results["rb"]


def _strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_train_rm_stops_at_the_first_non_finite_gradient(easy_data, tmp_path):
    """`--lr 1e6` blows the weights up within a few steps: stop there, exit 1, one line, nothing claiming success."""
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train-rm", "--train-data", str(easy_data / "train.jsonl"), "--lr", "1e6", "--save-steps", "2",
         "--logging-steps", "1", "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: step ")
    assert "= nan" in lines[0] or "= inf" in lines[0]
    assert f"{out}/checkpoints/step-2" in lines[0]  # the last good checkpoint, kept for --resume
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "checkpoints", "config.json", "log.jsonl"]
    _strict((out / "config.json").read_text())
    log = [_strict(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(log) + 1)) and len(log) >= 2
    # what the line suggests: --resume from that checkpoint with a lower --lr, which the resumed steps train at
    result = runner.invoke(
        app,
        ["train-rm", "--train-data", str(easy_data / "train.jsonl"), "--lr", "3e-3", "--max-steps", "4", "--resume",
         "--logging-steps", "1", "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    log = [_strict(line) for line in (out / "log.jsonl").read_text().splitlines() if '"train"' in line]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and log[1]["lr"] > 1e3 and 0 < log[2]["lr"] <= 3e-3
    assert (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("/nonexistent", "no such directory or file, and not a hub id (owner/name)"),
        ("Qwen/Qwen2.5-0.5B", "offline (HF_HUB_OFFLINE is set) and not in the local hub cache"),
    ],
)
def test_a_model_that_cannot_be_found_is_one_line(easy_data, tmp_path, model, expected):
    result = runner.invoke(
        app, ["train-rm", "--train-data", str(easy_data / "small.jsonl"), "--model", model, "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: model '{model}' not found: tried the built-in models (tiny-llama, smollm2-135m), a local "
                     f"directory or .gguf file, and the Hugging Face hub: {expected}"]  # fmt: skip


def test_commands_that_run_a_model_take_device_and_dtype(trained, easy_data, tmp_path):
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval-rm", "--model", str(trained), "--data", str(easy_data / "small.jsonl"),
                                 "--output", str(out), "--device", "cpu", "--dtype", "bf16", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = _strict(out.read_text())["config"]
    assert config["device"] == "cpu" and config["dtype"] == "bf16"
    for command in ("eval-rm", "score", "serve", "bon", "ppo", "train-rm", "export", "doctor"):
        help_text = runner.invoke(app, [command, "--help"]).output
        assert "--device" in help_text, command
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["eval-rm", "--model", str(trained), "--data", str(easy_data / "small.jsonl"),
                                     "--output", str(tmp_path / "cuda.json"), "--device", "cuda"])  # fmt: skip
        assert result.exit_code == 1 and "CUDA is not available" in result.output


def test_train_rm_select_best_on_flags_reach_the_run(easy_data, tmp_path):
    out = tmp_path / "run"
    args = ["train-rm", "--train-data", str(easy_data / "small.jsonl"), "--eval-data", f"val={easy_data / 'small.jsonl'}",
            "--max-steps", "4", "--batch-size", "8", "--eval-steps", "1", "--select-best-on", "val",
            "--early-stopping-patience", "2", "--output-dir", str(out), "--no-progress"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["select_best_on"] == "val" and cfg["early_stopping_patience"] == 2
    selection = json.loads((out / "metrics.json").read_text())["train"]["selection"]
    assert selection["on"] == "val" and selection["history"]
    bad = runner.invoke(app, [*args[:-3], "--select-best-on", "nope", "--output-dir", str(tmp_path / "bad"), "--no-progress"])
    assert bad.exit_code != 0 and "not an eval set" in bad.output
    assert not (tmp_path / "bad").exists()  # refused before anything is written
