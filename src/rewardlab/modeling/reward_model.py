"""A reward model on top of any Hugging Face causal LM, keeping its language-model head (GRM, Yang et al. 2024).

    hidden = decoder(input_ids)                      (B, T, H)   one forward pass
    position_rewards = head(hidden)                  (B, T)      R(x, tokens<=t) at every position t
    sequence_rewards = position_rewards[b, last_b]   (B,)        read at the last REAL token (attention mask, not pad id)
    log pi(y|x) = sum over response tokens of log_softmax(lm_head(hidden[t-1]))[token_t]   (response positions only)

Reading the reward by the attention mask rather than by `input_ids != pad_id` makes it correct for left or right padding and
when pad == eos. Position ids are derived from the mask, so scores do not depend on the padding side or batch composition.

`forward(..., packed=True)` computes the same outputs padding-free (`rewardlab.packing`): the batch's real tokens in one row,
attention within each sequence, so no compute is spent on padding. Models without the attention interface fall back to the
padded forward, with a one-time warning. The attention kernel (`KernelSettings.attention`, default "auto") is chosen per
device and dtype: one varlen FlashAttention or flex-attention call per layer on CUDA, the per-sequence SDPA loop on CPU; the
choice is logged once (`attention_kernel`).

The regularisers' response log-probs (`KernelSettings.logprob_backend`, default "auto") never make the (tokens x
vocabulary) logits at once: chunks recomputed in the backward (`chunked`), or Liger Kernel's fused linear cross-entropy
(`liger`, CUDA, an optional extra: `pip install "rewardlab[gpu]"`), chosen automatically when it is installed and the model
is on CUDA. Both are decided in one place, `choose_kernels`, from the model's `KernelSettings` (given when it is built).
The fast kernels (varlen, flex, liger) check themselves on their first call against segments / chunked, and give way to
them after an error or a mismatch (`rewardlab.kernel_check`).

On disk (`save_pretrained`): `rewardlab_config.json`, `reward_head.safetensors`, the tokenizer, `text_convention.json`
(what the tokenizer made of two fixed texts, for `rewardlab doctor`), and either the full causal LM
(full fine-tuning) or the LoRA adapter (peft) plus, when the base is not loadable by name (the built-in tiny-llama), the base
model under `base_model/`. The head is always saved beside the adapter, so a reloaded LoRA reward model gives the same scores.
`rewardlab_config.json` also holds `reward_statistics` (mean and std of its rewards, recorded at the end of training): with
`use_normalization()` the forward returns (r - mean) / std at every position (`rewardlab.modeling.normalization`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from rewardlab.choices import LOGPROB_BACKENDS
from rewardlab.config import DEFAULT_LORA_TARGETS, RewardModelSpec
from rewardlab.data.templates import TEXT_RECORD_NAME, text_record
from rewardlab.errors import MissingPathError, UserError
from rewardlab.kernel_check import checked, fallback_reason
from rewardlab.masks import last_token_index, position_ids_from_mask
from rewardlab.modeling.head import RewardHead
from rewardlab.modeling.logprobs import (
    DEFAULT_LOGPROB_CHUNK_TOKENS,
    chunked_logprobs,
    liger_logprobs,
    liger_unavailable_reason,
)
from rewardlab.modeling.normalization import RewardStatistics, missing_statistics, normalize_rewards
from rewardlab.modeling.sources import load_causal_lm, reloadable_by_name
from rewardlab.modeling.tiny import TINY_LLAMA
from rewardlab.packed_attention import (
    DESCRIPTION_OF,
    attention_implementation,
    packed_attention_enabled,
    select_packed_attention,
)
from rewardlab.packing import (
    PackedBatch,
    pack_padded,
    pack_values,
    packed_hidden,
    packing_unsupported_reason,
    sum_per_sequence,
    unpack,
)
from rewardlab.runtime import follow_umask, write_json

logger = logging.getLogger(__name__)
_warned_unpackable: set[str] = set()  # model classes already reported as falling back to padded batches

CONFIG_NAME = "rewardlab_config.json"
MODEL_SUBDIR = "model"  # a training run writes its reward model under OUTPUT_DIR/model
HEAD_WEIGHTS = "reward_head.safetensors"
BASE_SUBDIR = "base_model"


@dataclass
class LoraSettings:
    """LoRA on the attention projections; GRM's official defaults."""

    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))

    def peft_config(self, task_type: str | None = None):
        """peft's LoraConfig for these settings (the reward model's adapters; a policy's with task_type CAUSAL_LM)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type=task_type,
        )


@dataclass
class KernelSettings:
    """How a reward model runs its forward, given when it is built (the trainer passes its run's; scoring keeps these
    defaults): the packed attention kernel and the response log-probs' backend asked for (see `choose_kernels`), the
    response tokens per LM-head chunk (0: all at once), whether the LM head is sharded (FSDP, DeepSpeed: Liger reads the
    head's weight whole, so only the chunked path can run), and the dtype the decoder computes in when neither autocast
    nor the weights say it (FSDP's mixed precision casts the weights inside the forward)."""

    attention: str = "auto"  # auto | segments | varlen | flex
    logprob_backend: str = "auto"  # auto (liger on CUDA when installed) | chunked | liger
    logprob_chunk_tokens: int = DEFAULT_LOGPROB_CHUNK_TOKENS
    sharded_lm_head: bool = False
    compute_dtype_hint: torch.dtype | None = None


@dataclass
class RewardModelConfig:
    base_model: str
    # the head's defaults are train-rm's (rewardlab.config.RewardModelSpec), for configs saved without them
    head: str = RewardModelSpec.head  # linear: Linear(H, 1, bias=False), as AutoModelForSequenceClassification's `score`
    head_hidden: int = RewardModelSpec.head_hidden  # mlp: Linear(H, hidden) -> ReLU -> Linear(hidden, 1), GRM's head
    head_dropout: float = RewardModelSpec.head_dropout
    lora: LoraSettings | None = None
    # mean and std of its sequence rewards on the training responses or --norm-data (rewardlab.modeling.normalization),
    # recorded at the end of training; None for models saved before that (they cannot normalise)
    reward_statistics: RewardStatistics | None = None
    # what the head was trained to score: "preference" (a sequence reward at the last token) or "prm" (each step's
    # correctness at its end, as a logit: `rewardlab.step_evaluation`)
    objective: str = "preference"
    format_version: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RewardModelConfig:
        d = dict(d)
        if d.get("lora") is not None:
            d["lora"] = LoraSettings(**d["lora"])
        d["reward_statistics"] = RewardStatistics.from_dict(d.get("reward_statistics"))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class RewardOutput:
    """Per-row outputs in the padded batch's layout, whether or not the forward ran packed.

    Packed, `position_rewards` and `hidden_states` are 0 at padding positions (padded, they hold whatever the model computed
    there); `last_index` is always the column of the last real token in the padded (B, T) batch. `head_input` is the last
    layer's hidden states as the reward head and the LM head read them, in the layout the forward ran in: (N, H) packed
    (the batch's real tokens), the (B, T, H) `hidden_states` themselves padded. A loss's gradient with respect to it is that
    loss's pull on the last hidden layer (`rewardlab.losses.gradient_norms`).
    """

    position_rewards: torch.Tensor  # (B, T) float32: R(x, tokens<=t)
    sequence_rewards: torch.Tensor  # (B,) at the last real token
    last_index: torch.Tensor  # (B,)
    hidden_states: torch.Tensor  # (B, T, H) last layer, after the final norm
    attentions: torch.Tensor | None = None  # (B, heads, T, T) last layer, when asked
    logprobs: torch.Tensor | None = None  # (B,) summed response log-probs, when a response mask is given
    head_input: torch.Tensor | None = None  # (N, H) packed or (B, T, H) padded: what the heads read (see above)


class RewardModel(nn.Module):
    def __init__(
        self,
        lm: nn.Module,
        tokenizer,
        head: RewardHead,
        config: RewardModelConfig,
        reference: nn.Module | None = None,
        kernels: KernelSettings | None = None,
    ):
        super().__init__()
        self.lm = lm  # a transformers causal LM, or a peft PeftModel wrapping one
        self.head = head
        self.config = config
        self.tokenizer = tokenizer
        # A frozen reference causal LM (full fine-tuning with the dpo regulariser); with LoRA the reference is the base
        # model with adapters disabled, so no copy is kept.
        self.reference = reference
        if reference is not None:
            reference.requires_grad_(False)
            reference.eval()
        # How the forward runs (attention kernel, log-prob backend and chunk size, ...): set when the model is built.
        self.kernels = kernels if kernels is not None else KernelSettings()
        self._unpackable_reason: str | None = None  # set on the first packed call: why this model cannot run packed
        self._packing_checked = False
        self._logged_choices: set[tuple] = set()
        # The statistics rewards are normalised by, (r - mean) / std at every position (None: raw rewards, the default);
        # set by `use_normalization`, never during training.
        self.normalization: RewardStatistics | None = None
        # accelerate's transformer-based FSDP wrap finds the decoder-layer class to shard by here
        self._no_split_modules = list(getattr(self.causal_lm, "_no_split_modules", None) or [])

    # ----- structure -----
    @property
    def uses_lora(self) -> bool:
        return self.config.lora is not None

    @property
    def causal_lm(self) -> PreTrainedModel:
        return self.lm.get_base_model() if self.uses_lora else self.lm

    @property
    def decoder(self) -> nn.Module:
        return self.causal_lm.get_decoder()

    @property
    def lm_head(self) -> nn.Module:
        return self.causal_lm.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def primary(self) -> RewardModel:
        """The single reward model that stands for this one (an ensemble answers with its first member)."""
        return self

    def use_normalization(self, on: bool = True, where: str | None = None) -> RewardModel:
        """Normalise every position reward (and so the sequence, prompt and token rewards) by the recorded statistics, or
        (off) return raw rewards. Asking a model without statistics is an error (NormalizationUnavailable), never a no-op."""
        if on and self.config.reward_statistics is None:
            raise missing_statistics(where or f"reward model on {self.config.base_model}")
        self.normalization = self.config.reward_statistics if on else None
        return self

    def freeze_backbone(self) -> None:
        """The frozen-backbone baseline: only the reward head trains."""
        self.lm.requires_grad_(False)

    def freeze_lm_head(self) -> None:
        """The LM head's own weights stop training (a reward model without a regulariser does not use it), unless they are
        the input embedding (tied, as in SmolLM2 or gemma): that weight is used and must train, or the vanilla baseline
        would train fewer parameters than the GRM variants it is compared with."""
        embedding_ids = {id(p) for p in self.causal_lm.get_input_embeddings().parameters()}
        for parameter in self.lm_head.parameters():
            if id(parameter) not in embedding_ids:
                parameter.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer's activations in the backward instead of keeping them (less memory, ~1/3 more
        compute); non-reentrant, so LoRA and the packed attention kernels' keyword arguments pass through.

        A packed forward switches the attention implementation for its duration only, so the recomputation in the
        backward would run with whatever is set by then: `context_fn` re-enters the implementation the forward used."""
        lm = self.causal_lm
        kwargs = {"use_reentrant": False, "context_fn": functools.partial(_same_attention, lm)}
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.24's name for it
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # ----- kernel choices -----
    def compute_dtype(self) -> torch.dtype:
        """The dtype the decoder computes in: autocast's when it is on for the model's device, else the trainer's hint
        (mixed precision without autocast), else the weights'."""
        device_type = self.device.type
        try:
            if torch.is_autocast_enabled(device_type):
                return torch.get_autocast_dtype(device_type)
        except TypeError:  # torch < 2.4: per-device functions by name
            if device_type == "cuda" and torch.is_autocast_enabled():
                return torch.get_autocast_gpu_dtype()
            if device_type == "cpu" and torch.is_autocast_cpu_enabled():
                return torch.get_autocast_cpu_dtype()
        return self.kernels.compute_dtype_hint or next(self.causal_lm.parameters()).dtype

    def attention_kernel(self, training: bool | None = None) -> str:
        """The packed attention kernel a forward would use now (segments | varlen | flex); logged once per choice."""
        if training is None:
            training = torch.is_grad_enabled() and any(p.requires_grad for p in self.lm.parameters())
        dtype = self.compute_dtype()
        kind = choose_kernels(self, self.device, dtype, logprobs=False, training=training)["attention"]
        self._log_once(("attention", kind, dtype), "packed attention: %s, %s", kind, DESCRIPTION_OF[kind])
        return kind

    def logprob_kernel(self, lm_head: nn.Module | None = None, dtype: torch.dtype | None = None) -> str:
        """How response log-probs are computed now: chunked | liger (see `choose_kernels`), for hidden states in `dtype`
        (default: `compute_dtype`)."""
        kind = choose_kernels(self, self.device, dtype or self.compute_dtype(), packed=False, lm_head=lm_head)["logprobs"]
        self._log_once(("logprobs", kind), "response log-probs: %s", kind)
        return kind

    def _log_once(self, key: tuple, message: str, *args) -> None:
        if key not in self._logged_choices:
            self._logged_choices.add(key)
            logger.info(message, *args)

    # ----- forward -----
    def hidden(self, lm_body: nn.Module, input_ids, attention_mask, output_attentions: bool = False):
        out = lm_body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            output_attentions=output_attentions,
            use_cache=False,
        )
        return out.last_hidden_state, (out.attentions[-1] if output_attentions else None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        reference: bool = False,
        packed: bool = False,
    ) -> RewardOutput:
        """Rewards at every position; with `response_mask`, also summed response log-probs from the LM head.

        Everything happens inside this call so that DDP / FSDP / ZeRO-3 wrappers see every parameter use.
        `reference=True` returns only the reference model's log-probs (no gradients).
        `packed=True` runs padding-free (same outputs, see `RewardOutput`) when the model supports it; attention weights
        (`output_attentions`) always take the padded path. With `normalization` set, position and sequence rewards are
        (r - mean) / std.
        """
        out = self._forward(input_ids, attention_mask, response_mask, output_attentions, reference, packed)
        if self.normalization is not None and out.position_rewards is not None:
            out.position_rewards = normalize_rewards(out.position_rewards, self.normalization)
            out.sequence_rewards = normalize_rewards(out.sequence_rewards, self.normalization)
        return out

    def _forward(self, input_ids, attention_mask, response_mask, output_attentions, reference, packed) -> RewardOutput:
        """`forward` before normalisation."""
        packed = packed and not output_attentions and self.can_pack()
        if reference:
            logprobs = self.reference_logprobs(input_ids, attention_mask, response_mask, packed=packed)
            return RewardOutput(None, None, None, None, logprobs=logprobs)
        if packed:
            return self._forward_packed(input_ids, attention_mask, response_mask)
        # attention weights need the eager kernel: switched for this call only
        ctx = attention_implementation(self.causal_lm, "eager") if output_attentions else nullcontext()
        with ctx:
            hidden, attentions = self.hidden(self.decoder, input_ids, attention_mask, output_attentions)
        position_rewards = self.head(hidden).float()
        last = last_token_index(attention_mask)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        logprobs = None if response_mask is None else self.response_logprobs(hidden, input_ids, response_mask)
        return RewardOutput(position_rewards, position_rewards[rows, last], last, hidden, attentions, logprobs, hidden)

    def can_pack(self) -> bool:
        """Whether the packed forward is available for this model (checked once; a fallback is reported once per class)."""
        if not self._packing_checked:
            self._packing_checked = True
            self._unpackable_reason = packing_unsupported_reason(self.causal_lm)
            name = type(self.causal_lm).__name__
            if self._unpackable_reason is not None and name not in _warned_unpackable:
                _warned_unpackable.add(name)
                logger.warning("padding-free batches unavailable (%s); using padded batches", self._unpackable_reason)
        return self._unpackable_reason is None

    def _forward_packed(self, input_ids, attention_mask, response_mask) -> RewardOutput:
        """`forward` on the packed batch: the decoder sees only real tokens; outputs are unpacked to the (B, T) layout."""
        batch = pack_padded(input_ids, attention_mask)
        if min(batch.lengths, default=1) == 0:
            raise ValueError("a packed forward needs at least one real token in every row")
        kind = self.attention_kernel()
        with packed_attention_enabled(kind, self.causal_lm):
            hidden = packed_hidden(self.decoder, batch, kind)  # (N, H)
        token_rewards = self.head(hidden).float()  # (N,)
        logprobs = None
        if response_mask is not None:
            logprobs = self.packed_response_logprobs(hidden, batch, pack_values(batch, response_mask))
        return RewardOutput(
            position_rewards=unpack(batch, token_rewards),
            sequence_rewards=token_rewards[batch.last_index],
            last_index=last_token_index(attention_mask),
            hidden_states=unpack(batch, hidden),
            logprobs=logprobs,
            head_input=hidden,
        )

    def response_logprobs(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        response_mask: torch.Tensor,
        lm_head: nn.Module | None = None,
    ) -> torch.Tensor:
        """Summed log pi(y|x) over response tokens (B,), computing LM-head logits only where a response token is predicted.

        The token at position t is predicted from the hidden state at t-1, so we gather hidden[t-1] for response tokens t.
        """
        predict = response_mask[:, 1:]  # (B, T-1): target positions 1..T-1 that are response tokens
        rows, cols = predict.nonzero(as_tuple=True)
        token_logp = self._token_logprobs(hidden[rows, cols], input_ids[rows, cols + 1], lm_head)
        return torch.zeros(input_ids.shape[0], device=hidden.device, dtype=token_logp.dtype).index_add(0, rows, token_logp)

    def packed_response_logprobs(
        self, hidden: torch.Tensor, batch: PackedBatch, response: torch.Tensor, lm_head: nn.Module | None = None
    ) -> torch.Tensor:
        """`response_logprobs` on a packed batch: hidden (N, H), response (N,) bool -> (S,) summed log-probs.

        Packed token j is predicted from hidden[j-1] unless j starts its sequence (then nothing predicts it).
        """
        targets = (response.bool() & ~batch.is_first).nonzero().squeeze(1)  # (K,) packed indices of predicted tokens
        token_logp = self._token_logprobs(hidden[targets - 1], batch.input_ids[0, targets], lm_head)
        return sum_per_sequence(batch, token_logp, targets)

    def _token_logprobs(self, hidden_rows: torch.Tensor, targets: torch.Tensor, lm_head: nn.Module | None = None) -> torch.Tensor:
        """log softmax(lm_head(h))[target] for K (hidden, target) pairs, by the kernel `logprob_kernel` picks
        (`rewardlab.modeling.logprobs`: chunked and recomputed in the backward, or Liger's fused kernel)."""
        head = lm_head or self.lm_head
        softcap = getattr(self.causal_lm.config, "final_logit_softcapping", None) or None
        chunk = self.kernels.logprob_chunk_tokens
        if self.logprob_kernel(head, hidden_rows.dtype) == "liger":  # checked against chunked on its first call
            return checked(
                "liger",
                hidden_rows.dtype,
                lambda: liger_logprobs(head, hidden_rows, targets, softcap),
                lambda: chunked_logprobs(head, hidden_rows, targets, chunk, softcap),
                "chunked",
                "log-probs",
            )
        return chunked_logprobs(head, hidden_rows, targets, chunk, softcap)

    @torch.no_grad()
    def reference_logprobs(self, input_ids, attention_mask, response_mask, packed: bool = False) -> torch.Tensor:
        """log pi_ref(y|x): the base model with LoRA adapters disabled, or the frozen copy under full fine-tuning."""
        if packed and self.can_pack():
            return self._packed_reference_logprobs(input_ids, attention_mask, response_mask)
        if self.reference is not None:
            hidden, _ = self.hidden(self.reference.get_decoder(), input_ids, attention_mask)
            return self.response_logprobs(hidden, input_ids, response_mask, self.reference.get_output_embeddings())
        if not self.uses_lora:
            raise ValueError("the dpo regulariser needs a reference: LoRA (adapters disabled) or a frozen copy")
        with self.lm.disable_adapter():
            hidden, _ = self.hidden(self.decoder, input_ids, attention_mask)
            return self.response_logprobs(hidden, input_ids, response_mask)

    def _packed_reference_logprobs(self, input_ids, attention_mask, response_mask) -> torch.Tensor:
        batch = pack_padded(input_ids, attention_mask)
        response = pack_values(batch, response_mask)
        kind = self.attention_kernel(training=False)
        if self.reference is not None:
            with packed_attention_enabled(kind, self.reference):
                hidden = packed_hidden(self.reference.get_decoder(), batch, kind)
            return self.packed_response_logprobs(hidden, batch, response, self.reference.get_output_embeddings())
        if not self.uses_lora:
            raise ValueError("the dpo regulariser needs a reference: LoRA (adapters disabled) or a frozen copy")
        with self.lm.disable_adapter(), packed_attention_enabled(kind, self.causal_lm):
            hidden = packed_hidden(self.decoder, batch, kind)
        return self.packed_response_logprobs(hidden, batch, response)

    # ----- persistence -----
    def save_pretrained(
        self, path: str | os.PathLike, save_base: bool | None = None, state_dict: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Write the reward model (see the module docstring). `state_dict`: this module's full state dict when the
        weights held here are shards (FSDP, DeepSpeed ZeRO-3: `accelerator.get_state_dict(model)` gathers it)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            head_state, lm_state = self.head.state_dict(), None
        else:
            head_state = {k.removeprefix("head."): v for k, v in state_dict.items() if k.startswith("head.")}
            lm_state = {k.removeprefix("lm."): v for k, v in state_dict.items() if k.startswith("lm.")}
        self.tokenizer.save_pretrained(path)
        save_file({k: v.detach().contiguous().cpu() for k, v in head_state.items()}, path / HEAD_WEIGHTS)
        if self.uses_lora:
            self.lm.save_pretrained(path, **({"state_dict": lm_state} if lm_state is not None else {}))
            if save_base is None:
                save_base = self.config.base_model == TINY_LLAMA or not reloadable_by_name(self.config.base_model)
            if save_base:
                # The frozen base weights, without the injected LoRA modules (peft wraps each as `base_layer`).
                causal_state = (
                    self.causal_lm.state_dict()
                    if lm_state is None
                    else {k.removeprefix("base_model.model."): v for k, v in lm_state.items()}
                )
                base_state = {k.replace(".base_layer.", "."): v for k, v in causal_state.items() if "lora_" not in k}
                self.causal_lm.save_pretrained(path / BASE_SUBDIR, state_dict=base_state)
        else:
            self.causal_lm.save_pretrained(path, **({"state_dict": lm_state} if lm_state is not None else {}))
        write_json(path / TEXT_RECORD_NAME, text_record(self.tokenizer))  # the text convention training saw
        write_json(path / CONFIG_NAME, self.config.to_dict())
        follow_umask(path)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        trainable: bool = False,
    ) -> RewardModel:
        path = Path(path)
        config_file = path / CONFIG_NAME
        if not config_file.exists():
            raise MissingPathError(f"{path}: not a rewardlab reward model (no {CONFIG_NAME})")
        config = RewardModelConfig.from_dict(json.loads(config_file.read_text()))
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if config.lora is not None:
            from peft import PeftModel

            if (path / BASE_SUBDIR).exists():
                base = AutoModelForCausalLM.from_pretrained(path / BASE_SUBDIR, **kwargs)
            else:
                base, _ = load_causal_lm(config.base_model, dtype=dtype)
            lm = PeftModel.from_pretrained(base, path, is_trainable=trainable)
        else:
            lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        hidden_size = lm.get_input_embeddings().embedding_dim
        head = RewardHead(hidden_size, config.head, config.head_hidden, config.head_dropout)
        head.load_state_dict(load_file(path / HEAD_WEIGHTS))
        head.to(dtype=next(lm.parameters()).dtype)
        model = cls(lm, tokenizer, head, config)
        if device is not None:
            model.to(device)
        if not trainable:
            model.eval()
        return model


def build_reward_model(
    base_model: str,
    head: str = RewardModelSpec.head,
    head_hidden: int = RewardModelSpec.head_hidden,
    head_dropout: float = RewardModelSpec.head_dropout,
    lora: LoraSettings | None = None,
    reference_copy: bool = False,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    kernels: KernelSettings | None = None,
) -> RewardModel:
    """A new reward model on a causal LM, running its forward as `kernels` says (default: `KernelSettings()`).
    `reference_copy` keeps a frozen copy for the dpo regulariser (full fine-tuning)."""
    lm, tokenizer = load_causal_lm(base_model, dtype=dtype)
    reference = copy.deepcopy(lm) if (reference_copy and lora is None) else None
    config = RewardModelConfig(base_model=base_model, head=head, head_hidden=head_hidden, head_dropout=head_dropout, lora=lora)
    reward_head = initial_head(lm.get_input_embeddings().embedding_dim, config, seed)
    reward_head.to(dtype=next(lm.parameters()).dtype)
    if lora is not None:
        from peft import get_peft_model

        lm = get_peft_model(lm, lora.peft_config())
    return RewardModel(lm, tokenizer, reward_head, config, reference=reference, kernels=kernels)


def choose_kernels(
    model: RewardModel,
    device: torch.device,
    dtype: torch.dtype,
    *,
    packed: bool = True,
    logprobs: bool = True,
    training: bool = True,
    lm_head: nn.Module | None = None,
) -> dict[str, str]:
    """The attention kernel ("padded" unless `packed` and the model can pack; else segments | varlen | flex) and, with
    `logprobs`, the response log-probs' path (chunked | liger) that `model.kernels` give on `device` for hidden states in
    `dtype`. Decided here only: the trainer records it in config.json before training, and every forward asks again
    (autocast, or a fast kernel failing its check, can change it). An impossible explicit choice fails in one line."""
    kernels = model.kernels
    choices = {"attention": "padded"}
    if packed and model.can_pack():
        choices["attention"] = select_packed_attention(model.causal_lm.config, device, dtype, kernels.attention, training)
    if logprobs:
        backend = kernels.logprob_backend
        if backend not in LOGPROB_BACKENDS:
            raise UserError(f"logprob_backend '{backend}' is not one of {', '.join(LOGPROB_BACKENDS)}")
        reason = None
        if backend != "chunked":
            sharded = "the LM head is sharded (FSDP / DeepSpeed)" if kernels.sharded_lm_head else None
            reason = sharded or liger_unavailable_reason(lm_head or model.lm_head, device)
        if backend == "liger" and reason is not None:
            raise UserError(f"logprob_backend 'liger' cannot run here: {reason}")
        liger = backend != "chunked" and reason is None and fallback_reason("liger", dtype) is None
        choices["logprobs"] = "liger" if liger else "chunked"
    return choices


def initial_head(hidden_size: int, config: RewardModelConfig, seed: int) -> RewardHead:
    """The head a new reward model starts from: drawn from `seed` (the global generator is left as it was), so a run's
    initial head can be drawn again (`rewardlab doctor` compares a checkpoint's head with it)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return RewardHead(hidden_size, config.head, config.head_hidden, config.head_dropout)
    finally:
        torch.random.set_rng_state(generator_state)


def _same_attention(lm: PreTrainedModel):
    """Checkpoint contexts (forward, recomputation): the recomputation runs with the attention implementation in use
    when the forward ran (read now, at the forward)."""
    return nullcontext(), attention_implementation(lm, lm.config._attn_implementation)
