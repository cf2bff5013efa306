"""Memorize the Harmony corpus in a tiny model, and train LoRA adapters on it.

The trick that keeps this fast and exact on two CPU cores: only the embedding
(and LM-head) rows of the few hundred token ids the corpus uses are trained.
Training runs on a *compact* copy of the model whose vocabulary is just those
ids; the saved model scatters them back into the full 201088-row matrices and
leaves every other row exactly zero, so its logit is exactly 0 for any hidden
state. The loss is a softmax over the used ids plus one constant zero column
standing for all the rest, and training stops once every target token beats
every other used id and the zero column by ``MARGIN``: greedy decoding then
reproduces the corpus in float32 and bfloat16 alike, in transformers and vLLM.

Unseen text is trained for as well. On a prompt it never saw, the model reads
mostly ids whose rows are zero; so that it learns how to go on there (close a
JSON value on a schema whose keys it never saw), the structured examples keep
their keys, names and descriptions *unseen*: those ids map to one compact row
held at exactly zero, as every id outside the corpus is in the saved model,
and they carry no loss (the grammar, not the weights, writes a key).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from serve_app.devmodel.corpus import Sample

MARGIN = 3.0
VOCAB_KEYS = ("embed_tokens.weight", "lm_head.weight")


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T] compact ids
    targets: torch.Tensor  # [B, T] compact ids, -100 where no loss
    used: torch.Tensor  # [U] real token ids, sorted; compact id i is used[i], id U is every unseen id

    @property
    def size(self) -> int:
        """The compact vocabulary: the used ids and the unseen row."""
        return len(self.used) + 1


def make_batch(samples: list[Sample], used_ids: list[int]) -> Batch:
    used = torch.tensor(sorted(used_ids), dtype=torch.long)
    index = {int(t): i for i, t in enumerate(used)}
    unseen = len(used)
    length = max(len(s.prompt) + len(s.target) for s in samples)
    inputs = torch.zeros((len(samples), length), dtype=torch.long)
    targets = torch.full((len(samples), length), -100, dtype=torch.long)
    for row, s in enumerate(samples):
        seq = [index.get(t, unseen) for t in s.prompt + s.target]
        # Right padding never influences earlier positions of a causal model.
        inputs[row, : len(seq)] = torch.tensor(seq)
        # Position p predicts token p+1; only the target tokens carry loss, unseen ones none.
        for p in range(len(s.prompt) - 1, len(seq) - 1):
            if seq[p + 1] != unseen:
                targets[row, p] = seq[p + 1]
    return Batch(inputs, targets, used)


def hold_unseen_row(model: torch.nn.Module) -> None:
    """Set the unseen row (the last) of the embedding and LM head to zero and keep it there."""

    def zero_last_row(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[-1] = 0
        return grad

    for name, param in model.named_parameters():
        if _is_vocab_key(name):
            with torch.no_grad():
                param[-1] = 0
            # Adam moves nothing whose gradient was always zero.
            param.register_hook(zero_last_row)


def _is_vocab_key(key: str) -> bool:
    return key.endswith(VOCAB_KEYS)


def compact_config(config, size: int):
    """``config`` with a vocabulary of ``size`` compact ids (special ids dropped)."""
    config = copy.deepcopy(config)
    config.vocab_size = size
    config.pad_token_id = config.bos_token_id = config.eos_token_id = None
    return config


def compact(model: torch.nn.Module, used: torch.Tensor) -> torch.nn.Module:
    """A copy of ``model`` whose vocabulary is only the ``used`` rows and the (zero) unseen row."""
    small = type(model)(compact_config(model.config, len(used) + 1)).float()

    def rows(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v[used], torch.zeros_like(v[:1])])

    state = {k: (rows(v) if _is_vocab_key(k) else v) for k, v in model.state_dict().items()}
    small.load_state_dict(state, strict=False)
    return small


def expand(small: torch.nn.Module, used: torch.Tensor, config) -> torch.nn.Module:
    """The full-vocabulary model (``config``): trained rows scattered in, all others exactly zero."""
    vocab_size = config.vocab_size
    full = type(small)(config).float()
    state = {}
    for k, v in small.state_dict().items():
        if _is_vocab_key(k):
            big = torch.zeros((vocab_size, *v.shape[1:]), dtype=v.dtype)
            big[used] = v[: len(used)]  # the unseen row is every other id: zero
            v = big
        state[k] = v
    full.load_state_dict(state, strict=False)
    return full


def _logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Logits over the used ids plus a zero column for every other id."""
    logits = model(input_ids=batch.inputs).logits
    return torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)


def margin(model: torch.nn.Module, batch: Batch) -> float:
    """Smallest (target logit - best other logit) over all target positions."""
    with torch.no_grad():
        logits = _logits(model, batch)
    mask = batch.targets >= 0
    flat = logits[mask]
    tgt = batch.targets[mask]
    target_logit = flat.gather(1, tgt[:, None]).squeeze(1)
    others = flat.scatter(1, tgt[:, None], float("-inf")).max(dim=1).values
    return float((target_logit - others).min())


def fit(
    model: torch.nn.Module,
    batch: Batch,
    params: list[torch.nn.Parameter],
    lr: float,
    max_steps: int,
    progress: Callable[[int, float, float], None] | None = None,
    check_every: int = 25,
    must_converge: bool = True,
) -> tuple[int, float]:
    """Adam on ``params`` until the margin reaches MARGIN; returns (steps, margin).

    ``must_converge=False`` (a trial build) stops at ``max_steps`` whatever the margin.
    """
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    m = margin(model, batch)
    step = 0
    while step < max_steps and m < MARGIN:
        model.train()
        logits = _logits(model, batch)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % check_every == 0:
            model.eval()
            m = margin(model, batch)
            if progress:
                progress(step, loss.item(), m)
    model.eval()
    if m < MARGIN and must_converge:
        raise RuntimeError(f"training did not reach margin {MARGIN} in {max_steps} steps (margin {m:.2f})")
    return step, m
