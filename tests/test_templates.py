import pytest

from rewardlab.data.templates import encode_prompt, encode_prompt_response, pad_sequences, response_mask
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
