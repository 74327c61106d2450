"""The server LLM's task accuracy (zero-shot, label log-likelihood) and general perplexity.

``classification_prompt`` and ``label_answers`` are also what tuning trains on, so the
text -> label pairs of tuning and this evaluation always agree.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from crosslm_secure.config import EvalConfig, TaskConfig
from crosslm_secure.data.public_text import general_text
from crosslm_secure.data.records import Example
from crosslm_secure.errors import ConfigError
from crosslm_secure.eval.metrics import accuracy, macro_f1
from crosslm_secure.models.device import eval_mode
from crosslm_secure.models.llm import LoadedLLM, encode_prompt, follow_prefix, left_pad, render_prompt, tail_logits

CONTENT_FREE = ("N/A", "", "[MASK]")
"""Texts that carry no content (Zhao et al. 2021): what the LLM answers for them is its label bias."""

LABEL_BIAS_L2 = 1e-3
"""L2 weight on the fitted label offsets (:func:`fit_label_bias`): keeps them finite, moves them little."""


def label_answers(tokenizer: PreTrainedTokenizerBase, task: TaskConfig) -> list[str]:
    """The answer text for each label, in class order.

    After a chat template the answer opens the assistant turn (``"positive"``); after a
    plain prompt it continues the line (``" positive"``).
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    return [("" if chat else " ") + task.verbalizer(label) for label in task.labels]


def label_token_ids(tokenizer: PreTrainedTokenizerBase, task: TaskConfig) -> list[int]:
    """The first token of each label's answer; the LLM's prediction is the likeliest of them.

    Raises:
        ConfigError: two labels' answers start with the same token.
    """
    firsts = [tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in label_answers(tokenizer, task)]
    if len(set(firsts)) != len(firsts):
        shared = sorted(task.labels[i] for i, t in enumerate(firsts) if firsts.count(t) > 1)
        raise ConfigError(
            f"config: task.verbalizers for {shared} start with the same LLM token; "
            "give those labels verbalizers with distinct first words"
        )
    return firsts


def classification_prompt(
    tokenizer: PreTrainedTokenizerBase, task: TaskConfig, text: str, max_tokens: int | None = None
) -> list[int]:
    """Token ids of the zero-shot question about ``text``, cut to ``max_tokens`` if given.

    Only the review text is shortened, never the question around it.

    Raises:
        ConfigError: the question alone does not fit in ``max_tokens``.
    """

    def encode(body: str) -> list[int]:
        return encode_prompt(tokenizer, render_prompt(tokenizer, task.classify_template.format(text=body)))

    ids = encode(text)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    overhead = len(encode(""))
    if overhead >= max_tokens:
        raise ConfigError(
            f"config: task.classify_template needs {overhead} tokens without the text but the "
            f"limit is {max_tokens}; raise eval.llm_max_length / tuning.max_length or shorten it"
        )
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    budget = max_tokens - overhead
    while budget > 0:
        ids = encode(tokenizer.decode(text_ids[:budget]))
        if len(ids) <= max_tokens:
            return ids
        budget -= max(1, len(ids) - max_tokens)
    return encode("")


def llm_task_accuracy(
    llm: LoadedLLM,
    examples: Sequence[Example],
    task: TaskConfig,
    cfg: EvalConfig,
    *,
    progress: bool = True,
    fast: bool = True,
    calibrate: bool = False,
    label_bias: Sequence[float] | None = None,
) -> dict:
    """Zero-shot accuracy of the LLM: one forward per example, likeliest label answer wins.

    With ``calibrate`` the answers are contextually calibrated first (:func:`calibrated_predictions`),
    at the cost of one more forward per content-free input. With ``label_bias`` (one logit offset
    per label, :func:`fit_label_bias`) the offsets are added to the label logits first.

    Args:
        llm: the server LLM (possibly LoRA-tuned).
        examples: labelled texts (the evaluator's test split).
        task: labels, verbalizers and the classification template.
        cfg: batch size and the token limit per prompt.
        progress: show a progress bar.
        fast: share the prompt prefix and bucket by length (see ``label_logits``); ``False``
            runs the plain reference path (same predictions, for benchmarks and tests).
        calibrate: divide the label probabilities by their mean on :data:`CONTENT_FREE` inputs.
        label_bias: added to each example's label logits before the answer is taken.

    Returns:
        ``{"accuracy": float, "macro_f1": float, "n": int, "predicted": list[int]}`` (the
        answer to each example, in order); with ``label_bias`` also ``"macro_f1_without_bias"``.

    Raises:
        ConfigError: verbalizers share a first token, or the template does not fit.
    """
    scores = text_label_logits(llm, [e.text for e in examples], task, cfg, fast=fast, progress=progress)
    truth = [e.label for e in examples]
    extra = {}
    if label_bias is not None:
        extra["macro_f1_without_bias"] = macro_f1(truth, scores.argmax(dim=1).tolist(), len(task.labels))
        scores = scores.float() + torch.as_tensor(label_bias, dtype=torch.float32, device=scores.device)
    if calibrate:
        predictions = calibrated_predictions(scores, text_label_logits(llm, CONTENT_FREE, task, cfg)).tolist()
    else:
        predictions = scores.argmax(dim=1).tolist()
    return {
        "accuracy": accuracy(truth, predictions),
        "macro_f1": macro_f1(truth, predictions, len(task.labels)),
        "n": len(truth),
        "predicted": predictions,
        **extra,
    }


def text_label_logits(
    llm: LoadedLLM,
    texts: Sequence[str],
    task: TaskConfig,
    cfg: EvalConfig,
    *,
    fast: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Label logits ``[len(texts), labels]`` of the LLM asked the task's question about each text
    (:func:`classification_prompt` cut to ``cfg.llm_max_length``, then :func:`label_logits`).

    Raises:
        ConfigError: verbalizers share a first token, or the template does not fit.
    """
    tokenizer = llm.tokenizer
    targets = label_token_ids(tokenizer, task)
    prompts = [classification_prompt(tokenizer, task, text, cfg.llm_max_length) for text in texts]
    return label_logits(llm, prompts, targets, cfg.llm_batch_size, fast=fast, progress=progress)


def fit_label_bias(scores: torch.Tensor, labels: Sequence[int], weights: Sequence[float]) -> list[float]:
    """One logit offset per label that maximises the weighted likelihood of ``labels`` under
    ``softmax(scores + bias)``, offsets centred on 0.

    A tuned LLM can drift toward answering one label for most texts; this fit, on texts whose
    labels are known, undoes that drift and nothing else (a label-bias correction in the spirit
    of Zhao et al. 2021, fitted on labelled text instead of content-free input). A small L2 term
    keeps every offset finite when a label has no weighted text.

    Args:
        scores: label logits, ``[texts, labels]``.
        labels: each text's label index.
        weights: each text's weight (>= 0, not all 0).

    Returns:
        The offsets, one per label, in class order.

    Raises:
        ValueError: shapes differ, or no weight is positive.
    """
    logits = scores.detach().double().cpu()
    target = torch.as_tensor(list(labels), dtype=torch.long)
    weight = torch.as_tensor(list(weights), dtype=torch.float64)
    if logits.ndim != 2 or target.shape != (logits.shape[0],) or weight.shape != target.shape:
        raise ValueError(f"fit_label_bias: {tuple(logits.shape)} scores, {len(target)} labels, {len(weight)} weights")
    if not bool((weight > 0).any()) or bool((weight < 0).any()):
        raise ValueError("fit_label_bias: the weights must be >= 0 and not all 0")
    weight = weight / weight.sum()
    bias = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    # LBFGS on a convex objective in a handful of variables: converges in a few dozen steps.
    optimizer = torch.optim.LBFGS([bias], lr=1.0, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        nll = torch.nn.functional.cross_entropy(logits + bias, target, reduction="none")
        loss = (weight * nll).sum() + LABEL_BIAS_L2 * bias.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    centred = bias.detach() - bias.detach().mean()
    return [float(v) for v in centred]


def calibrated_predictions(scores: torch.Tensor, content_free_scores: torch.Tensor) -> torch.Tensor:
    """Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the likeliest label after
    each example's label probabilities are divided by their mean over content-free inputs.

    A label the prompt alone makes likely is discounted by exactly that bias; the probabilities
    are softmaxed over the label answers only, as the paper does.

    Args:
        scores: label logits of the examples, ``[examples, labels]``.
        content_free_scores: label logits of the content-free inputs, ``[inputs, labels]``.

    Returns:
        The calibrated label index of each example, ``[examples]``.
    """
    prior = torch.softmax(content_free_scores.float(), dim=1).mean(dim=0)
    return (torch.softmax(scores.float(), dim=1) / prior.clamp(min=1e-12)).argmax(dim=1)


def label_logits(
    llm: LoadedLLM,
    prompts: Sequence[list[int]],
    targets: Sequence[int],
    batch_size: int,
    *,
    fast: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Next-token logits of the ``targets`` tokens after each prompt, ``[len(prompts), len(targets)]``.

    The fast path does the same arithmetic on fewer tokens:

    - the token prefix every prompt shares (chat template, system turn, the template's opening
      words) is run once; its key/value cache is repeated for each batch;
    - prompts are batched in order of length, so a batch pads only to its own longest prompt.

    The reference path (``fast=False``) runs every full prompt in the given order. Both give
    the same logits up to float rounding (the unit tests compare them).
    """
    count = len(prompts)
    out = torch.zeros(count, len(targets))
    if count == 0:
        return out
    model, device, pad = llm.model, llm.device, llm.tokenizer.pad_token_id
    order = sorted(range(count), key=lambda i: len(prompts[i])) if fast else list(range(count))
    shared = shared_prefix(prompts) if fast else 0
    index = torch.tensor(list(targets), device=device)
    with eval_mode(model), torch.inference_mode():
        prefix_cache = None
        if shared:
            prefix_cache = model(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True)
            prefix_cache = prefix_cache.past_key_values
        for start in tqdm(range(0, count, batch_size), desc="LLM accuracy", disable=not progress):
            rows = order[start : start + batch_size]
            ids, mask, positions = left_pad([prompts[i][shared:] for i in rows], pad, device)
            past = None
            if prefix_cache is not None:
                past, mask, positions = follow_prefix(copy.deepcopy(prefix_cache), shared, mask, positions)
            logits = tail_logits(model, ids, mask, positions, keep=1, past_key_values=past)[:, -1, :]
            out[rows] = logits.index_select(1, index).float().cpu()
    return out


def shared_prefix(prompts: Sequence[list[int]]) -> int:
    """Length of the token prefix all ``prompts`` share, leaving at least one token of each."""
    first = prompts[0]
    length = min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        same = 0
        while same < length and prompt[same] == first[same]:
            same += 1
        length = same
    return max(length, 0)


def perplexity_chunks(tokenizer: PreTrainedTokenizerBase, cfg: EvalConfig) -> list[list[int]]:
    """``cfg.perplexity_chunks`` consecutive chunks of ``cfg.perplexity_chunk_tokens`` tokens
    from the start of ``general_text()`` (only as much text as needed is tokenized).

    Raises:
        ConfigError: the general text is too short for that many tokens.
    """
    size, count = cfg.perplexity_chunk_tokens, cfg.perplexity_chunks
    needed = size * count
    full = general_text()
    chars = needed * 6
    while True:
        ids = tokenizer(full[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= needed:
            return [ids[i * size : (i + 1) * size] for i in range(count)]
        if chars >= len(full):
            raise ConfigError(
                f"config: eval.perplexity_chunks x perplexity_chunk_tokens is {needed} tokens but "
                f"the general text has only {len(ids)}; lower them"
            )
        chars *= 2


def llm_perplexity(llm: LoadedLLM, cfg: EvalConfig, *, progress: bool = True) -> float:
    """Perplexity of the LLM on general text: exp of the mean next-token NLL over all chunks.

    Args:
        llm: the server LLM (possibly LoRA-tuned).
        cfg: number and length of chunks, batch size.
        progress: show a progress bar.

    Returns:
        The perplexity (lower is better); compare before and after tuning.

    Raises:
        ConfigError: the chunk length exceeds the general text.
    """
    chunks = perplexity_chunks(llm.tokenizer, cfg)
    total_nll, total_tokens = 0.0, 0
    with eval_mode(llm.model), torch.inference_mode():
        for start in tqdm(range(0, len(chunks), cfg.llm_batch_size), desc="LLM perplexity", disable=not progress):
            ids = torch.tensor(chunks[start : start + cfg.llm_batch_size], device=llm.device)
            logits = llm.model(input_ids=ids).logits[:, :-1, :].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += nll.item()
            total_tokens += ids[:, 1:].numel()
    return math.exp(total_nll / total_tokens)
