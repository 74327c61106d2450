"""DP-SGD training of a client's SLM on its private records (Opacus), with a ledger.

Each round: ``steps`` Poisson draws at rate ``q`` (``client/schedule.py``: full batches and
plain gradient descent for a head-only SLM, minibatch epochs for full fine-tuning), per-record
clipping at ``max_grad_norm`` (ghost clipping by default), Gaussian noise with a noise
multiplier fixed for the whole run, a fresh optimizer made private for the round.

A head-only SLM (frozen encoder) trains on cached sentence embeddings centred on public
text. Accepted synthetic samples (public) join its private training: after every DP step
a plain gradient step on them, weighted by ``slm.synthetic_weight``. That is post-processing
of the DP step's output, so it costs no budget, and the private DP steps and the public steps
shape the same model instead of the synthetic data overwriting it last. The round is
recorded in the client's ledger only after training finished; a round that fails midway
restores the weights it started from, so nothing unrecorded ever leaves the trainer.

The randomness that DP rests on (Poisson sampling, noise) comes from OS entropy, not
from the run seed: a seed in a published config would let anyone replay the noise.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from crosslm_secure.client.dp_preflight import check_weights_moved, preflight
from crosslm_secure.client.features import FeatureCache, own_head, set_public_centre, trains_on_features
from crosslm_secure.client.plain_trainer import PlainTrainer, loss_weights
from crosslm_secure.client.schedule import private_schedule
from crosslm_secure.client.synthetic_store import SyntheticStore
from crosslm_secure.client.trainer import TrainReport
from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.errors import PrivacyError
from crosslm_secure.models.batches import INPUT_KEYS, encode_examples, forward_logits
from crosslm_secure.privacy.accounting import MechanismBlock, noise_multiplier_for
from crosslm_secure.privacy.budget import decline_reason as budget_decline_reason
from crosslm_secure.privacy.ledger import Ledger, LedgerEntry
from crosslm_secure.privacy.settings import PrivacyConfig

MECHANISM = "dp-sgd"


class DPTrainer:
    """A client's SLM trainer with DP-SGD on private records (implements ``SLMTrainer``).

    With ``privacy.dp`` false it trains without DP (``private`` is False) and records each
    round as ``non-private`` in the ledger, so reports show epsilon = inf.

    Resume: if the ledger already holds this run's ``dp-sgd`` entry for a round,
    ``train_private`` does not train again (that would spend unrecorded budget) and returns
    the stored entry's epsilon with ``details["skipped"]``; the caller must restore the
    SLM checkpoint saved after that round.

    Args:
        slm: the client's SLM settings (batch size = expected Poisson batch, epochs, lr).
        privacy: DP settings.
        ledger: the client's ledger.
        run_id: the run the entries belong to.
        client_id: the client (for messages).
        planned_rounds: rounds of private training the run plans; the noise multiplier
            derived from ``target_epsilon`` covers all of them.
        num_records: private records n (the privacy unit is one record).
        device: where the model trains.
        seed: run seed (non-DP randomness of public training only).
        progress: show a progress bar per call.
        synthetic_store: where accepted synthetic samples are kept (default: in memory).

    Raises:
        PrivacyError: delta >= 1/n, or no records.
    """

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
        self.private = privacy.dp
        self.delta = privacy.delta_for(num_records)
        self.schedule = private_schedule(slm, num_records)
        self.sample_rate = self.schedule.sample_rate
        self.steps_per_round = self.schedule.steps
        self.seed = seed
        self._plain = PlainTrainer(slm, self.device, seed=seed, progress=progress)
        self._noise_multiplier: float | None = None
        self._features = FeatureCache()
        self.synthetic = synthetic_store if synthetic_store is not None else SyntheticStore()
        """Accepted synthetic (public) samples kept for joint training with a head-only SLM."""

    @property
    def noise_multiplier(self) -> float:
        """The run's noise multiplier: stored in the ledger, given, or derived once."""
        if self._noise_multiplier is None:
            stored = [
                e.noise_multiplier for e in self.ledger.entries if e.run_id == self.run_id and e.mechanism == MECHANISM
            ]
            if stored:
                self._noise_multiplier = float(stored[0])
            elif self.privacy.noise_multiplier is not None:
                self._noise_multiplier = float(self.privacy.noise_multiplier)
            else:
                self._noise_multiplier = noise_multiplier_for(
                    target_epsilon=float(self.privacy.target_epsilon),
                    delta=self.delta,
                    sample_rate=self.sample_rate,
                    steps=max(1, self.planned_rounds * self.steps_per_round),
                    accountant=self.privacy.accountant,
                )
        return self._noise_multiplier

    def planned_block(self, round_index: int) -> list[MechanismBlock]:
        """The DP-SGD release round ``round_index`` still has to make (empty if recorded)."""
        if not self.private or self.steps_per_round == 0:
            return []
        if self.ledger.find(self.run_id, round_index, MECHANISM) is not None:
            return []
        return [MechanismBlock(self.noise_multiplier, self.sample_rate, self.steps_per_round)]

    def decline_reason(self, round_index: int, *, extra_planned: Sequence[MechanismBlock] = ()) -> str | None:
        """Why this client declines the round (budget), or None.

        Args:
            round_index: the round about to run.
            extra_planned: other releases the round will make (e.g. the score release).
        """
        if not self.private:
            return None
        return budget_decline_reason(
            self.ledger,
            self.planned_block(round_index) + list(extra_planned),
            client_id=self.client_id,
            round_index=round_index,
            epsilon_max=self.privacy.epsilon_max,
            accountant=self.privacy.accountant,
            delta=self.delta,
        )

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Put LoRA adapters on the SLM when ``privacy.lora_rank > 0`` (once; in place).

        The model is moved to its device first: peft on a model that moves later
        corrupts the LoRA weights (an upstream pitfall). Returns the same model object.
        """
        if self.privacy.lora_rank == 0 or _has_lora(model):
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
        self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int
    ) -> TrainReport:
        """``slm.private_epochs`` epochs of DP-SGD, then one ledger entry for the round.

        Returns the client's cumulative epsilon (budget accountant). The model is left
        unwrapped, in eval mode.

        Raises:
            PrivacyError: over budget, a preflight refusal, weights that did not move,
                or ``examples`` not the ``num_records`` records the sample rate was set for.
        """
        if trains_on_features(model, self.slm.trainable, self.privacy.lora_rank):
            return self._train_head(model, tokenizer, examples, round_index)
        if not self.private:
            return self._train_non_private(model, tokenizer, examples, round_index)

        def dataset() -> TensorDataset:
            return _encoded_dataset(tokenizer, examples, self.slm.max_length)

        def forward(dp_model: torch.nn.Module, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            return forward_logits(dp_model, _trimmed_inputs(tensors), self.device)

        return self._train_dp(model, len(examples), dataset, forward, round_index)

    def _train_head(self, model: Any, tokenizer: Any, examples: Sequence[Example], round_index: int) -> TrainReport:
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
        synthetic = self.synthetic.before(round_index)
        if synthetic and self.slm.synthetic_weight > 0:
            public_x = self._features.features(
                tokenizer, model, [ex.uid for ex in synthetic], [ex.text for ex in synthetic], **encode
            )
            public = (public_x - centre, torch.tensor([ex.label for ex in synthetic], dtype=torch.long))
        report = self.train_private_features(
            own_head(model), features - centre, labels, round_index=round_index, public=public
        )
        model.eval()
        report.details["synthetic_in_training"] = 0 if public is None else len(public[1])
        return report

    def train_private_features(
        self,
        head: torch.nn.Module,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        round_index: int,
        public: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TrainReport:
        """The same round as :meth:`train_private`, for a model whose input is a feature vector.

        With ``slm.trainable: head`` the encoder is frozen, so DP-SGD only ever sees each
        record through its (frozen) sentence embedding; training ``head`` (features ->
        logits, e.g. dropout + the linear classifier) on precomputed embeddings runs the
        identical mechanism (Poisson rate, clipping, noise, steps, optimizer, ledger entry)
        without re-encoding texts. Audits use it to train reference and canary models.

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

        def forward(dp_model: torch.nn.Module, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            return dp_model(tensors[0].to(self.device))

        dataset = TensorDataset(features, labels)
        if not self.private:
            started = time.perf_counter()
            stats = self._steps(head, dataset, forward, round_index, public=public)
            report = TrainReport(stats["draws"], stats["seen"], stats["mean_loss"], time.perf_counter() - started)
            return self._record_non_private(report, round_index)
        return self._train_dp(head, len(features), lambda: dataset, forward, round_index, public=public)

    def _train_dp(
        self,
        model: Any,
        count: int,
        dataset: Callable[[], TensorDataset],
        forward: Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor],
        round_index: int,
        *,
        public: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TrainReport:
        existing = self.ledger.find(self.run_id, round_index, MECHANISM)
        if existing is not None:
            model.eval()
            return _skipped_report(existing)
        if count != self.num_records:
            raise PrivacyError(
                f"{self.client_id}: DP training was set up for {self.num_records} records but got "
                f"{count}; the sample rate would be wrong"
            )
        if self.steps_per_round == 0:
            model.eval()
            return TrainReport(0, 0, math.nan, 0.0, epsilon=self.ledger.epsilon(self.privacy.accountant, self.delta))
        reason = self.decline_reason(round_index)
        if reason is not None:
            raise PrivacyError(reason)
        self.prepare_model(model)
        started = time.perf_counter()
        stats = self._steps(model, dataset(), forward, round_index, public=public)
        entry = self.ledger.record_dp_sgd(
            run_id=self.run_id,
            round_index=round_index,
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=stats["draws"],
            max_grad_norm=self.privacy.max_grad_norm,
            delta=self.delta,
            accountant=self.privacy.accountant,
            epsilon_max=self.privacy.epsilon_max,
            details={
                "grad_sample_mode": self.privacy.grad_sample_mode,
                "optimizer": self.schedule.optimizer,
                "learning_rate": self.schedule.learning_rate,
                "lora_rank": self.privacy.lora_rank,
            },
        )
        return TrainReport(
            steps=stats["draws"],
            examples_seen=stats["seen"],
            mean_loss=stats["mean_loss"],
            seconds=time.perf_counter() - started,
            epsilon=entry.spent(),
            details=_entry_details(entry) | {"empty_batches": stats["empty"]},
        )

    def train_public(self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int) -> TrainReport:
        """Train on public synthetic records: post-processing, no ledger entry.

        A head-only SLM with ``slm.synthetic_weight > 0`` keeps them for joint training in its
        next private round instead (see the module docstring); other SLMs train on them now.
        """
        if trains_on_features(model, self.slm.trainable, self.privacy.lora_rank) and self.slm.synthetic_weight > 0:
            self.synthetic.keep(round_index, examples)
            kept = len(self.synthetic.before(round_index + 1))
            report = TrainReport(0, 0, math.nan, 0.0, details={"phase": "public", "kept": kept})
        else:
            report = self._plain.train_public(model, tokenizer, examples, round_index=round_index)
        report.epsilon = self.ledger.epsilon(self.privacy.accountant, self.delta) if self.private else math.inf
        return report

    def _train_non_private(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], round_index: int
    ) -> TrainReport:
        self.prepare_model(model)
        report = self._plain.train_private(model, tokenizer, examples, round_index=round_index)
        return self._record_non_private(report, round_index)

    def _record_non_private(self, report: TrainReport, round_index: int) -> TrainReport:
        existing = self.ledger.find(self.run_id, round_index, "non-private")
        if existing is None:
            self.ledger.record_non_private(
                run_id=self.run_id,
                round_index=round_index,
                steps=report.steps,
                accountant=self.privacy.accountant,
                epsilon_max=self.privacy.epsilon_max,
                details={"sample_rate": self.sample_rate},
            )
        report.epsilon = math.inf
        report.details["privacy"] = "non-private: epsilon = inf"
        return report

    def _steps(
        self,
        model: torch.nn.Module,
        dataset: TensorDataset,
        forward: Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor],
        round_index: int,
        *,
        public: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """``steps_per_round`` Poisson draws; DP-SGD through Opacus when ``private``, else plain steps.

        Non-private training runs the same schedule without clipping and noise, so the
        epsilon = inf baseline differs from the private run only by the mechanism.
        """
        model.to(self.device)
        model.train()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        start_weights = {n: p.detach().clone() for n, p in trainable.items()}
        generator = (
            _entropy_generator(torch.device("cpu"))
            if self.private
            else torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)
        )
        loader = DPDataLoader(dataset, sample_rate=self.sample_rate, generator=generator)
        optimizer = _optimizer(self.schedule.optimizer, list(trainable.values()), self.schedule.learning_rate)
        criterion: Any = torch.nn.CrossEntropyLoss(weight=loss_weights(self.slm, self.device))
        step_model, step_optimizer, step_loader = model, optimizer, loader
        if self.private:
            preflight(model, loader, sample_rate=self.sample_rate)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "secure RNG off": we seed from OS entropy
                private = PrivacyEngine(accountant=self.privacy.accountant).make_private(
                    module=model,
                    optimizer=optimizer,
                    criterion=criterion,
                    data_loader=loader,
                    noise_multiplier=self.noise_multiplier,
                    max_grad_norm=self.privacy.max_grad_norm,
                    poisson_sampling=False,  # the loader already samples Poisson at our rate
                    grad_sample_mode=self.privacy.grad_sample_mode,
                    noise_generator=_entropy_generator(self.device),
                )
            if self.privacy.grad_sample_mode == "ghost":
                step_model, step_optimizer, criterion, step_loader = private
            else:
                step_model, step_optimizer, step_loader = private
        public_step = _public_stepper(
            step_model, trainable, public, self.schedule.learning_rate * self.slm.synthetic_weight, self.device
        )
        losses: list[float] = []
        draws = seen = empty = 0
        bar = tqdm(
            total=self.steps_per_round,
            desc=f"SLM {'DP' if self.private else 'private'} r{round_index}",
            disable=not self.progress,
            leave=False,
        )
        finished = False
        fork_devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=fork_devices), warnings.catch_warnings():
                if not self.private:  # reproducible dropout; DP randomness stays OS entropy
                    torch.manual_seed(self.seed * 1_000_003 + round_index)
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
                            if seen == 0 and self.private:
                                check_weights_moved(start_weights, trainable)
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
            if self.private:
                step_model.to_standard_module()  # removes hooks and per-sample attributes
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
    return torch.optim.AdamW(params, lr=lr)


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


def _encoded_dataset(tokenizer: Any, examples: Sequence[Example], max_length: int) -> TensorDataset:
    inputs, labels = encode_examples(tokenizer, examples, max_length)
    return TensorDataset(*(inputs[key] for key in INPUT_KEYS), labels)


def _trimmed_inputs(tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop padding columns the sampled batch does not need (the set is padded to its longest)."""
    inputs = dict(zip(INPUT_KEYS, tensors, strict=True))
    length = max(1, int(inputs["attention_mask"].sum(dim=1).max()))
    return {key: value[:, :length].contiguous() for key, value in inputs.items()}


def _entropy_generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def _has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def _entry_details(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "mechanism": entry.mechanism,
        "noise_multiplier": entry.noise_multiplier,
        "sample_rate": entry.sample_rate,
        "delta": entry.delta,
        "max_grad_norm": entry.max_grad_norm,
        "accountant": entry.accountant,
        "epsilon_by_accountant": dict(entry.epsilon),
        "ledger_seq": entry.seq,
        "ledger_hash": entry.hash,
        "ledger_signature": entry.signature,
    }


def _skipped_report(entry: LedgerEntry) -> TrainReport:
    return TrainReport(
        steps=0,
        examples_seen=0,
        mean_loss=math.nan,
        seconds=0.0,
        epsilon=entry.spent(),
        details=_entry_details(entry)
        | {"skipped": f"round {entry.round} is already in the ledger (entry {entry.seq})"},
    )
