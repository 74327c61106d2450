"""The server's LLM work in a round: evaluate, generate, tune on feedback, judge the samples.

The coordinator only calls the :class:`ServerLLM` interface, so its round loop runs (and is
unit-tested) without a model; :class:`LocalLLM` is the real one over a loaded LLM.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from crosslm_secure.cache import ContentCache, content_key
from crosslm_secure.config import Config
from crosslm_secure.data.records import Example, SyntheticSample
from crosslm_secure.errors import ModelError
from crosslm_secure.eval.judge import Judge
from crosslm_secure.eval.llm_eval import fit_label_bias, llm_perplexity, llm_task_accuracy, text_label_logits
from crosslm_secure.eval.predictions import Predictions, write_predictions
from crosslm_secure.methods import method_for
from crosslm_secure.models.llm import LoadedLLM
from crosslm_secure.models.lora import save_lora
from crosslm_secure.runstore import RunStore
from crosslm_secure.server.generation import generate_synthetic
from crosslm_secure.server.tuning import Weighting, offset_weights, tune_llm

LABEL_BIAS_FILE = "label_bias.json"
"""Beside each round's adapter: the label offsets the LLM's answers add (``tuning.label_bias``)."""


class ServerLLM(Protocol):
    """What a round asks of the server's LLM. Each call returns metric-row entries."""

    def evaluate(self, round_index: int) -> dict[str, float]:
        """Task macro-F1 and accuracy on the evaluator's split, and perplexity on general text."""
        ...

    def generate(self, round_index: int) -> list[SyntheticSample]:
        """This round's label-conditioned synthetic samples."""
        ...

    def tune(
        self, round_index: int, samples: Sequence[SyntheticSample], means: np.ndarray, keep: np.ndarray
    ) -> dict[str, float]:
        """Tune on the accepted samples weighted by their released mean scores; keep the adapter."""
        ...

    def judge(self, samples: Sequence[SyntheticSample], keep: np.ndarray) -> dict[str, float]:
        """How often an independent judge agrees with the intended labels of kept and dropped samples."""
        ...


class LocalLLM:
    """The server LLM loaded in this process.

    Args:
        config: the validated job configuration.
        llm: the loaded LLM (LoRA-wrapped when the method tunes it).
        llm_test: the evaluator's test set; the first ``eval.llm_examples`` are used.
        store: the run folder (LoRA adapters go to ``llm/round-N``, the answer to each evaluator
            test record to ``server/predictions/round-N.jsonl``).
        cache: where round-0 LLM results (base weights, public settings, the evaluator's set) are reused.
        label_bias: the label offsets that go with the loaded adapter (``read_label_bias``), when
            a run resumes after a tuned round.
    """

    def __init__(
        self,
        config: Config,
        llm: LoadedLLM,
        llm_test: Sequence[Example],
        store: RunStore,
        cache: ContentCache | None = None,
        label_bias: list[float] | None = None,
    ) -> None:
        self.config = config
        self.llm = llm
        self.llm_test = list(llm_test)[: config.eval.llm_examples]
        self.store = store
        self.cache = cache
        self.label_bias = label_bias
        self._judge: Judge | None = None

    def evaluate(self, round_index: int) -> dict[str, float]:
        cfg = self.config

        calibrate = method_for(cfg.run.method).calibrates_llm

        bias = self.label_bias if round_index > 0 else None

        def task() -> dict:
            return llm_task_accuracy(
                self.llm,
                self.llm_test,
                cfg.task,
                cfg.eval,
                progress=cfg.run.progress,
                calibrate=calibrate,
                label_bias=bias,
            )

        def perplexity() -> float:
            return llm_perplexity(self.llm, cfg.eval, progress=cfg.run.progress)

        if round_index == 0 and self.cache is not None:
            # Round 0 evaluates the untouched base weights (a fresh LoRA adapter adds exactly
            # zero), so the result is a pure function of the weights, the data and the settings.
            base = _base_model_key(self.llm)
            ppl_key = content_key("llm_ppl", base, cfg.eval.perplexity_chunks, cfg.eval.perplexity_chunk_tokens)
            data = hashlib.sha256(json.dumps([[e.uid, e.text, e.label] for e in self.llm_test]).encode()).hexdigest()
            calibrated = ["calibrated"] if calibrate else []
            task_key = content_key(
                "llm_task", "predicted", base, cfg.task.model_dump(), cfg.eval.model_dump(), data, *calibrated
            )
            results = self.cache.get_or_compute("llm_task", task_key, task)
            ppl = self.cache.get_or_compute("llm_perplexity", ppl_key, perplexity)
            self.store.event("llm_eval_cache", round=round_index, hits=self.cache.hits, misses=self.cache.misses)
        else:
            results, ppl = task(), perplexity()
        predictions = Predictions.of(self.llm_test, results["predicted"])
        write_predictions(self.store.llm_predictions_path(round_index), predictions)
        if bias is not None:
            self.store.event(
                "llm_label_bias",
                round=round_index,
                bias=dict(zip(cfg.task.labels, bias, strict=True)),
                macro_f1=results["macro_f1"],
                macro_f1_without_bias=results["macro_f1_without_bias"],
            )
        return {"llm_accuracy": results["accuracy"], "llm_macro_f1": results["macro_f1"], "llm_perplexity": ppl}

    def generate(self, round_index: int) -> list[SyntheticSample]:
        cfg = self.config
        return generate_synthetic(
            self.llm, cfg.task, cfg.generation, round_index=round_index, seed=cfg.run.seed, progress=cfg.run.progress
        )

    def tune(
        self,
        round_index: int,
        samples: Sequence[SyntheticSample],
        means: np.ndarray,
        keep: np.ndarray,
        *,
        weighting: Weighting = "accepted",
    ) -> dict[str, float]:
        cfg = self.config
        report = tune_llm(
            self.llm,
            samples,
            means,
            cfg.task,
            cfg.tuning,
            accepted=keep,
            seed=cfg.run.seed + round_index,
            weighting=weighting,
            progress=cfg.run.progress,
        )
        extra = {}
        if cfg.tuning.label_bias == "fit":
            weights = offset_weights(samples, means, cfg.tuning, accepted=keep, weighting=weighting)
            self.label_bias = self._fit_label_bias(samples, weights)
            if self.label_bias is not None:
                offsets = dict(zip(cfg.task.labels, self.label_bias, strict=True))
                extra[LABEL_BIAS_FILE] = json.dumps({"bias": offsets}, indent=2) + "\n"
        save_lora(self.llm.model, self.store.llm_dir(round_index), extra_files=extra)
        return {"llm_tune_steps": report.steps, "llm_tune_loss": report.mean_loss}

    def _fit_label_bias(self, samples: Sequence[SyntheticSample], weights: np.ndarray) -> list[float] | None:
        """The tuned LLM's label offsets on the round's samples at ``weights`` (None: no positive weight)."""
        cfg = self.config
        chosen = [i for i, w in enumerate(weights) if w > 0]
        if not chosen:
            return None
        scores = text_label_logits(self.llm, [samples[i].text for i in chosen], cfg.task, cfg.eval)
        return fit_label_bias(scores, [samples[i].intended_label for i in chosen], [float(weights[i]) for i in chosen])

    def judge(self, samples: Sequence[SyntheticSample], keep: np.ndarray) -> dict[str, float]:
        """The judge is a linear probe the evaluator trains on its own labelled split, never on client data."""
        if not self.llm_test or not samples:
            return {}
        if self._judge is None:
            device = next(self.llm.model.parameters()).device
            self._judge = Judge(
                self.llm_test, len(self.config.task.labels), device, seed=self.config.run.seed, encoder=self.config.slm
            )
        agrees = self._judge.predict([s.text for s in samples]) == np.array([s.intended_label for s in samples])
        result = {"synthetic_judge_agreement_accepted": float(np.mean(agrees[keep])) if keep.any() else math.nan}
        if (~keep).any():
            result["synthetic_judge_agreement_rejected"] = float(np.mean(agrees[~keep]))
        return result


def read_label_bias(folder: Path, labels: Sequence[str]) -> list[float] | None:
    """The label offsets saved with the adapter in ``folder`` (None when the round fitted none).

    Raises:
        ModelError: the file is not readable, or its labels are not the task's.
    """
    path = folder / LABEL_BIAS_FILE
    if not path.is_file():
        return None
    try:
        offsets = json.loads(path.read_text())["bias"]
        same = sorted(offsets) == sorted(labels)
        bias = [float(offsets[label]) for label in labels] if same else []
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise ModelError(
            f"{path} is corrupt or was fitted for other labels; resume from an earlier round or start a new run"
        )
    return bias


def _base_model_key(llm: LoadedLLM) -> list[str]:
    """What a base-model result depends on besides data and settings: weights, dtype, device, libraries."""
    import transformers

    param = next(llm.model.parameters())
    return [llm.fingerprint, str(param.dtype), param.device.type, torch.__version__, transformers.__version__]
