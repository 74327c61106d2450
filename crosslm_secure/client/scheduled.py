"""What the DP-SGD and the non-private SLM trainers share: one round's schedule and its step loop.

Each round is ``steps`` Poisson draws at rate ``q`` (``client/schedule.py``: full batches and
plain gradient descent for a head-only SLM, minibatch epochs for full fine-tuning). The
non-private trainer runs the same schedule without clipping and noise, so the epsilon = inf
baseline differs from the private run only by the mechanism. Subclasses say what the
mechanism is (:meth:`ScheduledTrainer._wrap` and friends) and what the ledger records.

A head-only SLM (frozen encoder) trains on cached sentence embeddings centred on public
text. Accepted synthetic samples (public) join its private training: after every private step
a plain gradient step on them, weighted by ``slm.synthetic_weight`` (a number, or ``ratio``: the
synthetic samples over the private records). That is post-processing
of the private step's output, so it costs no budget, and the private steps and the public steps
shape the same model instead of the synthetic data overwriting it last. A round that fails
midway restores the weights it started from, so nothing unrecorded ever leaves the trainer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from opacus.data_loader import DPDataLoader
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from crosslm_secure.client.features import FeatureCache, own_head, set_public_centre, trains_on_features
from crosslm_secure.client.plain_trainer import PlainTrainer, loss_weights
from crosslm_secure.client.schedule import private_schedule
from crosslm_secure.client.synthetic_store import SyntheticStore, joins_private, synthetic_weight
from crosslm_secure.client.trainer import TrainReport
from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.errors import ConfigError, PrivacyError
from crosslm_secure.models.batches import INPUT_KEYS, encode_examples
from crosslm_secure.privacy.ledger import Ledger
from crosslm_secure.privacy.settings import PrivacyConfig

Forward = Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor]
Public = tuple[torch.Tensor, torch.Tensor] | None


class ScheduledTrainer:
    """A client's SLM trainer that runs the schedule of ``client/schedule.py`` and keeps a ledger.

    Args:
        slm: the client's SLM settings (batch size = expected Poisson batch, epochs, lr).
        privacy: DP settings.
        ledger: the client's ledger.
        run_id: the run the entries belong to.
        client_id: the client (for messages).
        planned_rounds: rounds of private training the run plans.
        num_records: private records n (the privacy unit is one record).
        device: where the model trains.
        seed: run seed (non-DP randomness of public training only).
        progress: show a progress bar per call.
        synthetic_store: where accepted synthetic samples are kept (default: in memory).
    """

    private: bool
    label: str
    """The progress bar's name of a private round."""

    def __init__(
        self,
        slm: SLMConfig,
        privacy: PrivacyConfig,
        *,
        ledger: Ledger,
        run_id: str,
        client_id: str,
        planned_rounds: int,
        num_records: int,
        device: torch.device | str,
        seed: int,
        progress: bool = True,
        synthetic_store: SyntheticStore | None = None,
    ) -> None:
        self.slm = slm
        self.privacy = privacy
        self.ledger = ledger
        self.run_id = run_id
        self.client_id = client_id
        self.planned_rounds = planned_rounds
        self.num_records = num_records
        self.device = torch.device(device)
        self.progress = progress
        self.delta = privacy.delta_for(num_records)
        self.schedule = private_schedule(slm, num_records)
        self.sample_rate = self.schedule.sample_rate
        self.steps_per_round = self.schedule.steps
        self.seed = seed
        self._plain = PlainTrainer(slm, self.device, seed=seed, progress=progress)
        self._features = FeatureCache(client_id)
        self.synthetic = synthetic_store if synthetic_store is not None else SyntheticStore()
        """Accepted synthetic (public) samples kept for joint training with a head-only SLM."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Put LoRA adapters on the SLM when ``privacy.lora_rank > 0`` (once; in place).

        The model is moved to its device first: peft on a model that moves later
        corrupts the LoRA weights (an upstream pitfall). Returns the same model object.
        """
        if self.privacy.lora_rank == 0 or has_lora(model):
            return model
        from peft import LoraConfig, get_peft_model

        model.to(self.device)
        config = LoraConfig(
            r=self.privacy.lora_rank,
            lora_alpha=self.privacy.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(self.privacy.lora_target_modules),
            task_type="SEQ_CLS",
        )
        get_peft_model(model, config)  # injects adapters into ``model`` itself
        return model

    def train_private(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int, through: int | None = None
    ) -> TrainReport:
        """One round on the client's private records, then its ledger entry.

        A head SLM joins the synthetic samples kept before ``round_index``, or through round ``through``.
        The model is left unwrapped, in eval mode.
        """
        if trains_on_features(model, self.slm.trainable, self.privacy.lora_rank):
            window = round_index if through is None else through + 1
            return self._train_head(model, tokenizer, examples, round_index, synthetic_before=window)
        return self._train_full(model, tokenizer, examples, round_index)

    def _train_head(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], round_index: int, *, synthetic_before: int
    ) -> TrainReport:
        """A head-only SLM: cached, publicly centred embeddings; synthetic samples as public steps."""
        encode = {"max_length": self.slm.max_length, "batch_size": self.slm.eval_batch_size}
        if self.slm.feature_centring == "public" and not bool(model.feature_mean.any()):
            set_public_centre(tokenizer, model, **encode)
        centre = model.feature_mean.detach().float().cpu()
        features = self._features.features(
            tokenizer, model, [ex.uid for ex in examples], [ex.text for ex in examples], **encode
        )
        labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        public = None
        synthetic = self.synthetic.before(synthetic_before)
        if synthetic and joins_private(self.slm):
            public_x = self._features.features(
                tokenizer, model, [ex.uid for ex in synthetic], [ex.text for ex in synthetic], keep=False, **encode
            )
            public = (public_x - centre, torch.tensor([ex.label for ex in synthetic], dtype=torch.long))
        report = self.train_private_features(
            own_head(model), features - centre, labels, round_index=round_index, public=public
        )
        model.eval()
        kept = 0 if public is None else len(public[1])
        report.details["synthetic_in_training"] = kept
        report.details["synthetic_weight"] = synthetic_weight(self.slm, len(labels), kept)
        return report

    def train_private_features(
        self,
        head: torch.nn.Module,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        round_index: int,
        public: Public = None,
    ) -> TrainReport:
        """The same round as :meth:`train_private`, for a model whose input is a feature vector.

        With ``slm.trainable: head`` the encoder is frozen, so training only ever sees each
        record through its (frozen) sentence embedding; training ``head`` (features -> logits,
        e.g. dropout + the linear classifier) on precomputed embeddings runs the identical
        mechanism (Poisson rate, clipping, noise, steps, optimizer, ledger entry) without
        re-encoding texts. Audits use it to train reference and canary models.

        Args:
            head: maps ``features[i]`` to logits; its trainable parameters are trained.
            features: ``[num_records, dim]`` float tensor, one row per private record.
            labels: ``[num_records]`` int64 class indices.
            round_index: the round recorded in the ledger.
            public: public ``(features, labels)`` (accepted synthetic samples): a plain gradient
                step on them, weighted by ``slm.synthetic_weight``, follows every private step.

        Raises:
            PrivacyError: as :meth:`train_private`.
        """
        if self.privacy.lora_rank > 0:
            raise PrivacyError(
                f"{self.client_id}: with privacy.lora_rank > 0 the encoder trains too, so features cannot "
                "stand in for texts; use train_private"
            )
        features = features.detach().float().cpu()
        labels = labels.detach().long().cpu()

        def forward(model: torch.nn.Module, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            return model(tensors[0].to(self.device))

        dataset = TensorDataset(features, labels)
        return self._train_round(head, len(features), lambda: dataset, forward, round_index, public=public)

    def train_public(self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int) -> TrainReport:
        """Train on public synthetic records: post-processing, no ledger entry.

        A head-only SLM whose ``slm.synthetic_weight`` is not 0 keeps them for joint training in its
        next private round instead (see the module docstring); other SLMs train on them now.
        """
        if trains_on_features(model, self.slm.trainable, self.privacy.lora_rank) and joins_private(self.slm):
            self.synthetic.keep(round_index, examples)
            kept = len(self.synthetic.before(round_index + 1))
            report = TrainReport(0, 0, math.nan, 0.0, details={"phase": "public", "kept": kept})
        else:
            report = self._plain.train_public(model, tokenizer, examples, round_index=round_index)
        report.epsilon = self.epsilon()
        return report

    # -- what a subclass supplies -------------------------------------------------------

    def epsilon(self) -> float:
        """The client's cumulative epsilon so far (inf once it trained without DP)."""
        raise NotImplementedError

    def _train_full(self, model: Any, tokenizer: Any, examples: Sequence[Example], round_index: int) -> TrainReport:
        """A round of a model whose encoder trains too (full fine-tuning or LoRA)."""
        raise NotImplementedError

    def _train_round(
        self,
        model: Any,
        count: int,
        dataset: Callable[[], TensorDataset],
        forward: Forward,
        round_index: int,
        *,
        public: Public = None,
    ) -> TrainReport:
        """Run the round's steps through :meth:`_steps` and record it in the ledger."""
        raise NotImplementedError

    def _generator(self, round_index: int) -> torch.Generator:
        """The Poisson sampler's randomness."""
        raise NotImplementedError

    def _wrap(
        self, model: Any, optimizer: Any, criterion: Any, loader: Any, round_index: int
    ) -> tuple[Any, Any, Any, Any]:
        """``(model, optimizer, criterion, loader)`` to step with in round ``round_index`` (the mechanism's
        wrappers, if any)."""
        return model, optimizer, criterion, loader

    def _after_first_step(self, start: dict[str, torch.Tensor], trainable: dict[str, torch.nn.Parameter]) -> None:
        """A check after the round's first step (e.g. that the weights moved)."""

    def _unwrap(self, step_model: Any) -> None:
        """Undo :meth:`_wrap` on the model when the round ends, however it ends."""

    def _seed_dropout(self, round_index: int) -> None:
        """Seed the model's own randomness (dropout) for the round, where that is allowed."""

    def _steps(
        self,
        model: torch.nn.Module,
        dataset: TensorDataset,
        forward: Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor],
        round_index: int,
        *,
        public: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """``steps_per_round`` Poisson draws, stepped through the mechanism of :meth:`_wrap`."""
        model.to(self.device)
        model.train()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        start_weights = {n: p.detach().clone() for n, p in trainable.items()}
        loader = DPDataLoader(dataset, sample_rate=self.sample_rate, generator=self._generator(round_index))
        optimizer = _optimizer(self.schedule.optimizer, list(trainable.values()), self.schedule.learning_rate)
        criterion: Any = torch.nn.CrossEntropyLoss(weight=loss_weights(self.slm, self.device))
        step_model, step_optimizer, criterion, step_loader = self._wrap(
            model, optimizer, criterion, loader, round_index
        )
        weight = synthetic_weight(self.slm, len(dataset), 0 if public is None else len(public[1]))
        public_step = _public_stepper(step_model, trainable, public, self.schedule.learning_rate * weight, self.device)
        losses: list[float] = []
        draws = seen = empty = 0
        bar = tqdm(
            total=self.steps_per_round,
            desc=f"SLM {self.label} r{round_index}",
            disable=not self.progress,
            leave=False,
        )
        finished = False
        fork_devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=fork_devices), warnings.catch_warnings():
                self._seed_dropout(round_index)
                # Opacus's hooks fire on outputs when inputs need no grad (token ids): expected.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                while draws < self.steps_per_round:
                    for batch in step_loader:
                        draws += 1
                        bar.update(1)
                        labels = batch[-1]
                        if len(labels) == 0:
                            # Counted as a step (the accounting assumes every draw releases).
                            empty += 1
                        else:
                            step_optimizer.zero_grad(set_to_none=True)
                            logits = forward(step_model, batch[:-1])
                            loss = criterion(logits.float(), labels.to(self.device))
                            loss.backward()
                            step_optimizer.step()
                            if seen == 0:
                                self._after_first_step(start_weights, trainable)
                            seen += len(labels)
                            losses.append(float(loss.detach()))
                        if public_step is not None:
                            public_step()
                        if draws >= self.steps_per_round:
                            break
            finished = True
        finally:
            bar.close()
            step_optimizer.zero_grad(set_to_none=True)
            self._unwrap(step_model)
            if not finished:
                with torch.no_grad():
                    for name, param in trainable.items():
                        param.copy_(start_weights[name])
            model.eval()
        return {
            "draws": draws,
            "seen": seen,
            "empty": empty,
            "mean_loss": float(np.mean(losses)) if losses else math.nan,
        }


def _optimizer(name: str, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    raise ConfigError(f"slm: private_optimizer {name!r} is not one of sgd, adamw; pick one of them")


def _public_stepper(
    step_model: torch.nn.Module,
    trainable: dict[str, torch.nn.Parameter],
    public: tuple[torch.Tensor, torch.Tensor] | None,
    lr: float,
    device: torch.device,
) -> Callable[[], None] | None:
    """A plain gradient step on public ``(features, labels)``, or None when there is nothing to step on.

    It runs with Opacus's hooks off, so the public samples never enter per-sample gradients,
    clipping or the accounting: only the model's current (already private) weights are used.
    """
    if public is None or len(public[1]) == 0 or lr <= 0:
        return None
    x, y = public[0].to(device), public[1].to(device)
    params = list(trainable.values())

    def step() -> None:
        toggles = hasattr(step_model, "disable_hooks")
        if toggles:
            step_model.disable_hooks()
        try:
            loss = F.cross_entropy(step_model(x).float(), y)
            grads = torch.autograd.grad(loss, params)
        finally:
            if toggles:
                step_model.enable_hooks()
        with torch.no_grad():
            for param, grad in zip(params, grads, strict=True):
                param.add_(grad, alpha=-lr)

    return step


def encoded_dataset(tokenizer: Any, examples: Sequence[Example], max_length: int) -> TensorDataset:
    inputs, labels = encode_examples(tokenizer, examples, max_length)
    return TensorDataset(*(inputs[key] for key in INPUT_KEYS), labels)


def trimmed_inputs(tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop padding columns the sampled batch does not need (the set is padded to its longest)."""
    inputs = dict(zip(INPUT_KEYS, tensors, strict=True))
    length = max(1, int(inputs["attention_mask"].sum(dim=1).max()))
    return {key: value[:, :length].contiguous() for key, value in inputs.items()}


def has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())
