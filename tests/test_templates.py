import pytest

from rewardlab.data.templates import encode_prompt, encode_prompt_response, pad_sequences
from rewardlab.masks import response_mask
from rewardlab.modeling.tiny import build_byte_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


def test_conversational_uses_chat_template_and_boundary(tok):
    prompt = [{"role": "user", "content": "reverse: abc"}]
    enc = encode_prompt_response(tok, prompt, [{"role": "assistant", "content": "cba"}])
    assert tok.decode(enc.input_ids[: enc.response_start]) == "<|user|>reverse: abc</s><|assistant|>"
    assert tok.decode(enc.input_ids[enc.response_start :]) == "cba</s>"
    # the prompt ids are exactly what a policy is conditioned on
    assert encode_prompt(tok, prompt) == enc.input_ids[: enc.response_start]
    # a string response to a conversational prompt is the assistant turn
    assert encode_prompt_response(tok, prompt, "cba").input_ids == enc.input_ids


def test_plain_strings_get_eos(tok):
    enc = encode_prompt_response(tok, "Q: 2+2? A:", " 4")
    assert tok.decode(enc.input_ids[enc.response_start :]) == " 4</s>"
    assert enc.input_ids[-1] == tok.eos_token_id


def test_plain_template_without_chat_template(tok):
    plain = build_byte_tokenizer()
    plain.chat_template = None
    enc = encode_prompt_response(plain, [{"role": "user", "content": "hi"}], "hello")
    assert plain.decode(enc.input_ids) == "User: hi\n\nAssistant: hello</s>"
    assert plain.decode(enc.input_ids[enc.response_start :]) == "hello</s>"


def test_truncation_keep_end_and_drop(tok):
    prompt, response = "p" * 30, "r" * 10
    full = encode_prompt_response(tok, prompt, response)
    kept = encode_prompt_response(tok, prompt, response, max_length=20, truncation="keep_end")
    assert kept.truncated and len(kept.input_ids) == 20
    assert kept.input_ids == full.input_ids[-20:]
    assert kept.response_start == full.response_start - (len(full.input_ids) - 20)
    assert encode_prompt_response(tok, prompt, response, max_length=20, truncation="drop") is None
    assert not encode_prompt_response(tok, prompt, response, max_length=100).truncated


def test_pad_sequences_both_sides(tok):
    a = encode_prompt_response(tok, "abc", "d")
    b = encode_prompt_response(tok, "abcdef", "gh")
    for side in ("left", "right"):
        ids, mask, start = pad_sequences([a, b], tok.pad_token_id, side)
        rmask = response_mask(mask, start)
        for row, enc in enumerate((a, b)):
            assert ids[row][mask[row].bool()].tolist() == enc.input_ids
            assert ids[row][rmask[row]].tolist() == enc.input_ids[enc.response_start :]


# ----- joint tokenisation: prompt + response as one text, the response's start from character offsets -----

HH_PAIRS = [  # HH-RLHF style: the prompt ends in "Assistant: ", so BPE merges the space into the response's first word
    ("\n\nHuman: What is the capital of France?\n\nAssistant: ", "The capital of France is Paris."),
    ("\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: Tell me a joke.\n\nAssistant: ", "Why did the chicken cross the road?"),
    ("\n\nHuman: Say something in Japanese.\n\nAssistant: ", "ありがとう 🙏"),
    ("\n\nHuman: Anything?\n\nAssistant: ", ""),
    ("Say hel", "lo world"),  # a word cut by the boundary: "Ġhello" straddles it
    ("x  ", "  y"),  # a whitespace run across the boundary
]


def split_ids(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    return tokenizer(prompt)["input_ids"], tokenizer(response, add_special_tokens=False)["input_ids"]


def test_response_start_from_offsets_straddling_tokens_and_added_specials():
    from rewardlab.data.templates import response_start_from_offsets

    # "Assistant: " + "Hello": tokens "Assistant" (0, 9), ":" (9, 10), " Hello" (10, 16) straddles the boundary at 11
    assert response_start_from_offsets([(0, 9), (9, 10), (10, 16)], [True] * 3, 11) == 2
    # a token ending exactly at the boundary is the prompt's
    assert response_start_from_offsets([(0, 9), (9, 11), (11, 16)], [True] * 3, 11) == 2
    # BOS (no span) before the text is the prompt's; an EOS the tokenizer appends after an empty response is the response's
    assert response_start_from_offsets([(0, 0), (0, 3), (0, 0)], [False, True, False], 3) == 2
    assert response_start_from_offsets([(0, 0), (0, 3), (3, 5), (0, 0)], [False, True, True, False], 3) == 2
    assert response_start_from_offsets([(0, 0)], [False], 0) == 1  # no text at all: BOS is the prompt
    assert response_start_from_offsets([(0, 0), (0, 2)], [False, True], 0) == 1  # empty prompt


def test_byte_tokenizer_joined_ids_equal_prompt_ids_then_response_ids(tok):
    """The built-in world's numbers cannot move: with no merges, the joined text has the ids of the parts, and the
    response starts right after the prompt's ids (random text with multi-byte characters, whitespace, special tokens)."""
    import random

    rng = random.Random(0)
    alphabet = ["a", "b", " ", "\n", "é", "🙏", "ありがとう", "</s>", "<|assistant|>", ":", "  "]
    for _ in range(200):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
        response = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
        enc = encode_prompt_response(tok, prompt, response)
        prompt_ids, response_ids = split_ids(tok, prompt, response)
        if not response_ids or response_ids[-1] != tok.eos_token_id:
            response_ids = response_ids + [tok.eos_token_id]
        assert (enc.input_ids, enc.response_start) == (prompt_ids + response_ids, len(prompt_ids)), (prompt, response)


def test_slow_tokenizer_without_offsets_byt5():
    """A Python tokenizer (no offsets) that appends EOS itself: the response starts after the prompt's bytes, and the
    appended EOS is not counted in the prompt nor doubled."""
    from transformers import ByT5Tokenizer

    byt5 = ByT5Tokenizer()
    assert not byt5.is_fast
    for prompt, response in HH_PAIRS:
        enc = encode_prompt_response(byt5, prompt, response)
        assert enc.input_ids == byt5(prompt + response)["input_ids"]  # joined text; ByT5 appends EOS itself
        assert enc.input_ids[-1] == byt5.eos_token_id and enc.input_ids.count(byt5.eos_token_id) == 1
        assert enc.response_start == len(prompt.encode())


@pytest.fixture(scope="module")
def smollm2():
    from rewardlab.modeling.sources import SMOLLM2, load_tokenizer

    return load_tokenizer(SMOLLM2, progress=False)


@pytest.mark.slow
def test_smollm2_plain_strings_are_the_joined_text_and_the_response_starts_where_offsets_say(smollm2):
    tokenizer, eos = smollm2, smollm2.eos_token_id
    differs = 0
    for prompt, response in HH_PAIRS:
        enc = encode_prompt_response(tokenizer, prompt, response)
        assert enc.input_ids == tokenizer(prompt + response)["input_ids"] + [eos]
        offsets = tokenizer(prompt + response, return_offsets_mapping=True)["offset_mapping"]
        ends = [end for _, end in offsets]
        want = next((i for i, end in enumerate(ends) if end > len(prompt)), len(ends))
        assert enc.response_start == want
        assert all(end <= len(prompt) for end in ends[: enc.response_start])  # prompt tokens: prompt text only
        prompt_ids, response_ids = split_ids(tokenizer, prompt, response)
        differs += enc.input_ids != prompt_ids + response_ids + [eos]
    assert differs >= 4  # the cases this is about: tokenised apart, the ids would differ
    # the response mask the GRM regularisers and token rewards use starts there
    encs = [encode_prompt_response(tokenizer, p, r) for p, r in HH_PAIRS]
    ids, mask, start = pad_sequences(encs, tokenizer.pad_token_id, "left")
    for row, enc in enumerate(encs):
        assert ids[row][response_mask(mask, start)[row]].tolist() == enc.input_ids[enc.response_start :]
    # "Assistant: " + "The": " The" straddles the boundary and is the response's first token
    first = encs[0]
    assert tokenizer.convert_ids_to_tokens(first.input_ids[first.response_start]) == "ĠThe"
    assert tokenizer.decode(first.input_ids[: first.response_start]).endswith("Assistant:")


@pytest.mark.slow
def test_smollm2_without_offsets_the_fallback_finds_the_same_start(smollm2):
    """The fallback for tokenizers without offsets, run on SmolLM2's ids, agrees with the offsets on every cut of HH text
    (word cuts, whitespace runs, a multi-byte character split over byte-level tokens)."""
    from rewardlab.data.templates import encode_joined, response_start_without_offsets

    text = "\n\nHuman: Say hello in Japanese, please.\n\nAssistant:  ありがとう 🙏 means thanks."
    for cut in range(len(text) + 1):
        by_offsets = encode_joined(smollm2, text[:cut], text[cut:], add_special_tokens=True)
        assert response_start_without_offsets(smollm2, by_offsets.input_ids, text[:cut], True) == by_offsets.response_start
