"""The LOSS attack on the server LLM: does it remember the clients' records it never saw?

Members are client training records (the LLM never trains on them; it should sit at chance);
non-members are population records. The LLM is the run's final LoRA-tuned model when the
method tunes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from crosslm_secure.audit.base import AuditError
from crosslm_secure.audit.population import AuditRun, balanced
from crosslm_secure.audit.roc import AttackMetrics, attack_metrics
from crosslm_secure.errors import CrossLMError
from crosslm_secure.methods import method_for


def llm_attack(run: AuditRun, progress: bool) -> tuple[AttackMetrics, tuple[np.ndarray, np.ndarray], str] | None:
    """LOSS on the server LLM (final LoRA adapter when the run tuned it): mean token NLL of
    each record's text. Members: client training records; non-members: population records."""
    from crosslm_secure.models.llm import load_llm
    from crosslm_secure.models.lora import load_lora

    cfg = run.settings
    half = cfg.llm_records // 2
    private = [ex for client in run.split.clients for ex in client.train]
    rng = np.random.default_rng([cfg.seed, 25])
    members = [private[i] for i in rng.permutation(len(private))[:half]]
    non_members = [run.non_members[i] for i in rng.permutation(len(run.non_members))[:half]]
    members, non_members = balanced(members, non_members, cfg.seed)
    adapter = "untuned"
    try:
        llm = load_llm(run.config.llm, run.device)
        folder = final_adapter(run)
        if folder is not None:
            llm.model = load_lora(llm.model, folder)
            adapter = f"LoRA {folder.name}"
    except CrossLMError as exc:
        raise AuditError(f"audit: cannot load the server LLM ({exc}); check llm.model in the run's config") from None
    texts = [ex.text for ex in members + non_members]
    scores = -mean_nll(llm, texts, run.config.eval.llm_max_length, run.config.eval.llm_batch_size, progress)
    n = len(members)
    metrics = attack_metrics(scores[:n], scores[n:], resamples=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed)
    return metrics, (scores[:n], scores[n:]), adapter


def final_adapter(run: AuditRun) -> Path | None:
    if not method_for(run.config.run.method).tunes_llm:
        return None
    rounds = sorted(
        (int(p.name.split("-", 1)[1]), p)
        for p in (run.root / "llm").glob("round-*")
        if p.name.split("-", 1)[1].isdigit() and (p / "adapter_config.json").is_file()
    )
    if not rounds:
        completed = [r["round"] for r in run.store.rounds()] if (run.root / "metrics.jsonl").is_file() else []
        if any(r > 0 for r in completed):
            raise AuditError(
                f"audit: no LoRA adapter under {run.root / 'llm'} although the run tuned the LLM; rerun or resume it"
            )
        return None
    return rounds[-1][1]


def mean_nll(llm: Any, texts: Sequence[str], max_length: int, batch_size: int, progress: bool) -> np.ndarray:
    """Mean next-token NLL of each text (BOS-prefixed, cut to ``max_length`` tokens), batched."""
    tokenizer, model = llm.tokenizer, llm.model
    device = llm.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        encoded.append(([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids)
    values = np.full(len(texts), np.nan)
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="audit: LLM loss", disable=not progress, leave=False):
            chunk = encoded[start : start + batch_size]
            width = max(2, max(len(ids) for ids in chunk))
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, reduction="none", ignore_index=-100
            )
            counts = mask[:, 1:].sum(dim=1)
            per_text = (nll.sum(dim=1) / counts.clamp(min=1)).cpu().numpy()
            values[start : start + len(chunk)] = np.where(counts.cpu().numpy() > 0, per_text, np.nan)
    fill = np.nanmax(values) if np.isfinite(values).any() else 0.0
    return np.where(np.isnan(values), fill, values)
