"""Step encoding for a PRM: the prompt and steps as one text, and the token each step's score is read at (the last token of
`step + separator`), checked against character positions found independently, with the byte tokenizer and SmolLM2's."""

from __future__ import annotations

import pytest

from helpers import WithoutOffsets
from rewardlab.data.step_encoding import (
    encode_step_examples,
    encode_steps,
    render_steps,
    step_ends_without_offsets,
)
from rewardlab.data.types import StepExample
from rewardlab.errors import UserError
from rewardlab.modeling.tiny import build_byte_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


@pytest.fixture(scope="module")
def smollm2():
    from rewardlab.modeling.sources import SMOLLM2, load_tokenizer

    return load_tokenizer(SMOLLM2, progress=False)


def segment_ends(text: str, steps: list[str], separator: str) -> list[int]:
    """Where each `step + separator` ends in `text`, found by searching the text (independent of `render_steps`): the
    steps are the last thing before the template's closing, so search backwards from the end."""
    joined = "".join(step + separator for step in steps)
    start = text.rindex(joined)
    ends, position = [], start
    for step in steps:
        position += len(step) + len(separator)
        ends.append(position)
    return ends


STEPS = ["Tom has 3 apples.", "He buys 5, so 3 + 5 = 8.", "Ünïcödé ∑ 😊 — fine.", "The answer is 8."]


# ----------------------------------------------------------------------------------------------------------------------
# byte tokenizer: one token per byte, so the positions can be read off the text


def test_string_prompt_byte_tokenizer(tok):
    enc = encode_steps(tok, "Q: apples?", STEPS)
    text = "Q: apples?\n" + "".join(step + "\n" for step in STEPS)
    assert enc.input_ids == tok(text)["input_ids"]  # the joined text, tokenised as one
    assert tok.decode(enc.input_ids[: enc.response_start], skip_special_tokens=True) == "Q: apples?\n"
    for end, stop in zip(enc.step_ends, segment_ends(text, STEPS, "\n"), strict=True):
        assert tok.decode(enc.input_ids[: end + 1], skip_special_tokens=True) == text[:stop]
        assert tok.decode([enc.input_ids[end]]) == "\n"  # the separator's token
    assert len(enc.step_ends) == enc.n_steps == 4 and not enc.truncated


def test_prompt_already_ending_with_the_separator_and_an_empty_prompt(tok):
    ended = encode_steps(tok, "Q?\n", ["a", "b"])
    assert ended.input_ids == encode_steps(tok, "Q?", ["a", "b"]).input_ids
    empty = encode_steps(tok, "", ["a", "", "b"])
    assert tok.decode(empty.input_ids, skip_special_tokens=True) == "a\n\nb\n"
    assert [tok.decode(empty.input_ids[: e + 1], skip_special_tokens=True) for e in empty.step_ends] == [
        "a\n",
        "a\n\n",
        "a\n\nb\n",
    ]


def test_other_separators(tok):
    enc = encode_steps(tok, "Q", ["one", "two"], separator=" ки\n")
    text = tok.decode(enc.input_ids, skip_special_tokens=True)
    assert text == "Q ки\none ки\ntwo ки\n"
    assert [tok.decode(enc.input_ids[: e + 1], skip_special_tokens=True) for e in enc.step_ends] == [
        "Q ки\none ки\n",
        text,
    ]
    with pytest.raises(UserError, match="separator must not be empty"):
        encode_steps(tok, "Q", ["a"], separator="")


def test_chat_prompt_byte_tokenizer(tok):
    prompt = [{"role": "user", "content": "Q: apples?"}]
    enc = encode_steps(tok, prompt, STEPS)
    assert tok.decode(enc.input_ids[: enc.response_start]) == "<|user|>Q: apples?</s><|assistant|>"
    text = tok.decode(enc.input_ids)
    assert text == "<|user|>Q: apples?</s><|assistant|>" + "".join(s + "\n" for s in STEPS) + "</s>"
    for end, stop in zip(enc.step_ends, segment_ends(text, STEPS, "\n"), strict=True):
        assert tok.decode(enc.input_ids[: end + 1]) == text[:stop]


def test_plain_template_without_chat_template():
    plain = build_byte_tokenizer()
    plain.chat_template = None
    enc = encode_steps(plain, [{"role": "user", "content": "hi"}], ["a", "b"])
    assert plain.decode(enc.input_ids, skip_special_tokens=True) == "User: hi\n\nAssistant: a\nb\n"
    assert plain.decode(enc.input_ids[enc.response_start :], skip_special_tokens=True) == "a\nb\n"


def test_truncation_keeps_whole_steps_or_fails_clearly(tok):
    full = encode_steps(tok, "Q?", ["aaaa", "bbbb", "cccc"])
    limit = full.step_ends[1] + 2  # room for two steps and one more token
    kept = encode_steps(tok, "Q?", ["aaaa", "bbbb", "cccc"], max_length=limit)
    assert kept.truncated and kept.step_ends == full.step_ends[:2] and kept.n_steps == 3
    assert kept.input_ids == full.input_ids[: full.step_ends[1] + 1]
    assert encode_steps(tok, "Q?", ["aaaa", "bbbb", "cccc"], max_length=limit, truncation="drop") is None
    with pytest.raises(UserError, match=r"3 steps are \d+ tokens, over max_length"):
        encode_steps(tok, "Q?", ["aaaa", "bbbb", "cccc"], max_length=limit, truncation="error")
    assert encode_steps(tok, "Q" * 50, ["a"], max_length=10) is None  # not even the first step fits
    same = encode_steps(tok, "Q?", ["aaaa", "bbbb", "cccc"], max_length=len(full.input_ids))
    assert same == full


def test_tokenizers_without_offsets_give_the_same_encoding(tok):
    cases = [("Q: apples?", STEPS), ([{"role": "user", "content": "Q?"}], ["a", "", "b ✓"]), ("", ["x"])]
    for prompt, steps in cases:
        assert encode_steps(WithoutOffsets(tok), prompt, steps) == encode_steps(tok, prompt, steps)
    with pytest.raises(UserError, match="step truncation 'keep_end'"):
        encode_steps(tok, "Q", ["a"], truncation="keep_end")


def test_encode_step_examples_cuts_labels_with_the_steps(tok):
    examples = [
        StepExample("Q?", ["aaaa", "bbbb", "cccc"], [True, False, None], 1),
        StepExample("Q" * 50, ["a"], [True], -1),
        StepExample("Q?", ["a"], [True], -1),
    ]
    encoded, counts = encode_step_examples(tok, examples, max_length=12)
    assert counts == {"examples": 2, "truncated": 1, "dropped": 1}
    assert [e.index for e in encoded] == [0, 2]
    assert encoded[0].labels == [True, False][: len(encoded[0].encoded.step_ends)]


# ----------------------------------------------------------------------------------------------------------------------
# SmolLM2: a BPE tokenizer


def test_smollm2_positions_are_the_last_token_of_each_step_and_separator(smollm2):
    cases = [
        ("Tom has 3 apples and buys 5 more. How many?", STEPS),
        ("What is 3 × 4?", ["3 × 4 means three groups of four.", "", "  So the answer is 12.\u00a0"]),  # empty step, odd spaces
        ("Solve $x^2 = 9$.", ["  The common denominator is 6.\n", "$\\frac{3}{6}$ — done.", "x = 3"]),
    ]
    for prompt, steps in cases:
        enc = encode_steps(smollm2, prompt, steps)
        text = render_steps(smollm2, prompt, steps).text
        assert enc.input_ids == smollm2(text)["input_ids"]
        offsets = smollm2(text, return_offsets_mapping=True)["offset_mapping"]
        stops = segment_ends(text, steps, "\n")
        for step, (end, stop) in enumerate(zip(enc.step_ends, stops, strict=True)):
            start = stops[step - 1] if step else stops[0] - len(steps[0]) - 1
            # the last token ending inside step + separator, and no later token ends there
            assert start < offsets[end][1] <= stop or (steps[step] == "" and offsets[end][0] < stop < offsets[end][1])
            assert all(offsets[i][1] > stop for i in range(end + 1, len(offsets)))
        tokens = [smollm2.convert_ids_to_tokens(enc.input_ids[end]) for end in enc.step_ends]
        if steps is STEPS:  # "\n" before a letter is its own token in SmolLM2: each step is read at its separator
            assert tokens == ["Ċ"] * 4
        elif steps[1] == "":
            # "four." + "\n" + "" + "\n" + "  So": the whitespace run "\n\n " is one token, straddling step 0's end:
            # step 0 is read at its own last token ("."), the empty step at the straddling token
            assert tokens[:2] == [".", "ĊĊĠ"]


def test_smollm2_steps_match_trl_tokenised_apart(smollm2):
    """TRL's PRMTrainer tokenises each `step + separator` apart and labels its last token; where BPE merges nothing across
    the boundaries (SmolLM2 keeps "\\n" before a letter apart), the steps' ids and positions are TRL's."""
    steps = ["Tom has 3 apples.", "He buys 5, so 3 + 5 = 8.", "The answer is 8."]
    enc = encode_steps(smollm2, "How many apples?", steps)
    trl_ids, trl_ends = [], []
    for step in steps:
        trl_ids += smollm2(step, add_special_tokens=False)["input_ids"] + smollm2("\n", add_special_tokens=False)["input_ids"]
        trl_ends.append(len(trl_ids) - 1)
    assert enc.input_ids[enc.response_start :] == trl_ids
    assert [end - enc.response_start for end in enc.step_ends] == trl_ends


def test_smollm2_chat_prompt(smollm2):
    prompt = [{"role": "user", "content": "How many apples?"}]
    enc = encode_steps(smollm2, prompt, STEPS)
    text = smollm2.decode(enc.input_ids)
    assert text.endswith("<|im_start|>assistant\n" + "".join(s + "\n" for s in STEPS) + "<|im_end|>\n")
    prompt_text = smollm2.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert smollm2.decode(enc.input_ids[: enc.response_start]) == prompt_text
    for end, stop in zip(enc.step_ends, segment_ends(text, STEPS, "\n"), strict=True):
        assert smollm2.decode(enc.input_ids[: end + 1]) == text[:stop]


def test_smollm2_consecutive_empty_steps_are_refused_clearly(smollm2):
    with pytest.raises(UserError, match="step 2: its score would be read at the same token as the step before it"):
        encode_steps(smollm2, "Q", ["a", "", ""])
    with pytest.raises(UserError, match=r"example 0 \(x\): step 2"):
        encode_step_examples(smollm2, [StepExample("Q", ["a", "", ""], [True] * 3, -1, metadata={"id": "x"})], None)


def test_smollm2_without_offsets_the_fallback_finds_the_same_positions(smollm2):
    cases = [
        ("Q: apples?", STEPS),
        ("What is 3 × 4?", ["3 × 4 means three groups of four.", "", "  So the answer is 12.\u00a0"]),
        ([{"role": "user", "content": "Résous 😊"}], ["x = 3.", "Vérification ✓"]),
        ("", ["a", "", "b"]),
    ]
    for prompt, steps in cases:
        enc = encode_steps(smollm2, prompt, steps)
        rendered = render_steps(smollm2, prompt, steps)
        assert step_ends_without_offsets(smollm2, enc.input_ids, rendered) == enc.step_ends, (prompt, steps)


def test_smollm2_on_real_processbench_rows(smollm2):
    """The real ProcessBench rows (LaTeX, long steps): every step is read at its own separator token, and scores that
    follow the labels give ProcessBench's perfect figures."""
    from pathlib import Path

    from rewardlab.data.steps import load_steps
    from rewardlab.step_metrics import processbench_scores

    ds = load_steps(str(Path(__file__).parent / "fixtures" / "data" / "processbench_real.json"))
    encoded, counts = encode_step_examples(smollm2, ds.examples, max_length=None)
    assert counts == {"examples": 8, "truncated": 0, "dropped": 0}
    for example, item in zip(ds.examples, encoded, strict=True):
        text = render_steps(smollm2, example.prompt, example.steps).text
        offsets = smollm2(text, return_offsets_mapping=True)["offset_mapping"]
        assert [offsets[end][1] for end in item.encoded.step_ends] == segment_ends(text, example.steps, "\n")
    oracle = [[0.0 if label is False else 1.0 for label in example.labels] for example in ds]
    report = processbench_scores([e.subset for e in ds], [e.first_error for e in ds], oracle, threshold=0.5)
    assert report["subsets"]["gsm8k"]["f1"] == 1.0 and report["subsets"]["math"]["f1"] == 1.0
    assert report["subsets"]["olympiadbench"]["correct_accuracy"] is None  # one sample, with an error
