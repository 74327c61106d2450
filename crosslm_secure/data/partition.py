"""Split a dataset across client silos: IID or Dirichlet label skew.

* Train split: ``iid`` deals records out stratified by label (every client gets the
  same label mix, sizes differ by at most one per label); with ``records_per_class``
  it deals each client exactly that many records of every label and leaves the rest of
  the train split unused (scarce sites); ``dirichlet`` draws each
  label's client shares from ``Dirichlet(alpha)`` (Hsu et al. 2019), redrawing until
  every client holds at least ``MIN_TRAIN_PER_CLIENT`` records.
* Test split: ``client_test_fraction`` of it (stratified) is divided among the clients,
  each label in proportion to the clients' train counts of that label, so a silo's
  held-out set follows its own label mix (a hospital's test patients look like its
  training patients). Under ``iid`` this is an even stratified split. The rest is
  ``TaskData.llm_test``, the evaluator's set for the LLM.

A pure function of its inputs and ``seed``; every record lands in exactly one place (with
``records_per_class``, a train record may land in none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crosslm_secure.config import PartitionConfig
from crosslm_secure.data.records import ClientData, Example, TaskData
from crosslm_secure.errors import DataError

MIN_TRAIN_PER_CLIENT = 4
"""Fewest private train records a client may get."""

_DIRICHLET_DRAWS = 100


def partition_clients(
    train: list[Example],
    test: list[Example],
    cfg: PartitionConfig,
    client_ids: list[str],
    *,
    seed: int,
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """Divide train and test records among clients and the LLM evaluator.

    Args:
        train: the labelled training records (become the clients' private data).
        test: the labelled test records (clients' held-out sets + the LLM's test set).
        cfg: scheme (``iid``/``dirichlet``), ``alpha`` and ``client_test_fraction``.
        client_ids: one id per client, in order.
        seed: the same seed and inputs give the same partition.
        label_names: the task's label names, to name a label in a refusal (else its index).

    Returns:
        ``TaskData`` with one ``ClientData`` per id (records kept in input order) and
        the remaining test records as ``llm_test``.

    Raises:
        DataError: fewer than two clients, duplicate ids, too few train records to
            give every client ``MIN_TRAIN_PER_CLIENT``, or (with ``records_per_class``) too few
            of one label to give every client that many.
    """
    k = len(client_ids)
    if k < 2:
        raise DataError(f"partition: need at least 2 clients (got {k}); raise partition.clients")
    if len(set(client_ids)) != k:
        raise DataError("partition: client ids must be unique; check the client list")
    if len(train) < k * MIN_TRAIN_PER_CLIENT:
        raise DataError(
            f"partition: {len(train)} training records cannot give {k} clients "
            f"{MIN_TRAIN_PER_CLIENT} each; lower partition.clients or add records"
        )
    train_labels = np.array([ex.label for ex in train], dtype=np.int64)
    test_labels = np.array([ex.label for ex in test], dtype=np.int64)
    num_labels = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1

    if cfg.records_per_class is not None:
        short = scarce_shortfall(train_labels, num_labels, cfg)
        if short is not None:
            label, count = short
            raise DataError(
                f"partition: {scarce_refusal(cfg, label_names[label] if label_names else str(label), count)}"
            )
        if cfg.records_per_class * num_labels < MIN_TRAIN_PER_CLIENT:
            raise DataError(
                f"partition: records_per_class={cfg.records_per_class} of {num_labels} labels gives a client fewer "
                f"than {MIN_TRAIN_PER_CLIENT} records; raise partition.records_per_class"
            )
        owner = _scarce_owner(train_labels, k, cfg.records_per_class, np.random.default_rng([seed, 15]))
    elif cfg.scheme == "iid":
        owner = _iid_owner(train_labels, k, np.random.default_rng([seed, 11]))
    else:
        owner = _dirichlet_owner(train_labels, k, cfg.alpha, np.random.default_rng([seed, 12]))

    held = stratified_mask(test_labels, cfg.client_test_fraction, np.random.default_rng([seed, 13]))
    counts = np.zeros((num_labels, k), dtype=np.int64)
    dealt = owner >= 0  # scarce sites leave records unused
    np.add.at(counts, (train_labels[dealt], owner[dealt]), 1)
    test_owner = _proportional_owner(test_labels, held, counts, np.random.default_rng([seed, 14]))

    clients = [
        ClientData(
            client_id=client_id,
            train=[ex for ex, o in zip(train, owner, strict=True) if o == c],
            test=[ex for ex, o in zip(test, test_owner, strict=True) if o == c],
        )
        for c, client_id in enumerate(client_ids)
    ]
    llm_test = [ex for ex, o in zip(test, test_owner, strict=True) if o < 0]
    return TaskData(clients=clients, llm_test=llm_test)


def scarce_shortfall(train_labels: np.ndarray, num_labels: int, cfg: PartitionConfig) -> tuple[int, int] | None:
    """``(label, count)`` of the first label with fewer train records than ``records_per_class``
    times the clients ask for, or None when every label has enough (or no scarcity is asked)."""
    if cfg.records_per_class is None:
        return None
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_labels)
    for label, count in enumerate(counts.tolist()):
        if count < cfg.records_per_class * cfg.clients:
            return label, count
    return None


def scarce_refusal(cfg: PartitionConfig, label: str, count: int) -> str:
    """The sentence that refuses ``records_per_class`` for a label with only ``count`` train records."""
    need = (cfg.records_per_class or 0) * cfg.clients
    return (
        f"partition.records_per_class={cfg.records_per_class} for {cfg.clients} clients needs {need} training "
        f"records of label {label!r}, but the task has {count}; lower records_per_class or partition.clients"
    )


def _scarce_owner(labels: np.ndarray, k: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Each client gets ``per_class`` random records of every label; the rest stay unused (-1)."""
    owner = np.full(len(labels), -1, dtype=np.int64)
    for label in np.unique(labels):
        chosen = rng.permutation(np.flatnonzero(labels == label))[: per_class * k]
        owner[chosen] = np.arange(len(chosen)) % k
    return owner


def _iid_owner(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Deal records round-robin after a label-stratified shuffle."""
    shuffled = rng.permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    owner = np.empty(len(labels), dtype=np.int64)
    # A random rotation per call keeps client 0 from always getting the extra records.
    owner[order] = (np.arange(len(labels)) + int(rng.integers(k))) % k
    return owner


def _dirichlet_owner(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Each label's records split by Dirichlet(alpha) shares; redrawn until sizes suffice."""
    owner = np.empty(len(labels), dtype=np.int64)
    for _ in range(_DIRICHLET_DRAWS):
        for label in np.unique(labels):
            positions = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(k, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(positions)).astype(np.int64)
            for client, part in enumerate(np.split(positions, cuts)):
                owner[part] = client
        if np.bincount(owner, minlength=k).min() >= MIN_TRAIN_PER_CLIENT:
            return owner
    return _top_up(owner, k, rng)


def _top_up(owner: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Move random records from the largest clients until each has the minimum."""
    owner = owner.copy()
    sizes = np.bincount(owner, minlength=k)
    for client in range(k):
        while sizes[client] < MIN_TRAIN_PER_CLIENT:
            donor = int(sizes.argmax())
            position = int(rng.choice(np.flatnonzero(owner == donor)))
            owner[position] = client
            sizes[donor] -= 1
            sizes[client] += 1
    return owner


def stratified_mask(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask selecting about ``fraction`` of each label's records."""
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        positions = np.flatnonzero(labels == label)
        take = int(round(fraction * len(positions)))
        mask[rng.permutation(positions)[:take]] = True
    return mask


def _proportional_owner(
    labels: np.ndarray, held: np.ndarray, train_counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Client of each held test record (-1 = LLM evaluator), per label in proportion to
    the clients' train counts of that label (even shares when no client has it)."""
    owner = np.full(len(labels), -1, dtype=np.int64)
    k = train_counts.shape[1]
    for label in np.unique(labels[held]):
        positions = rng.permutation(np.flatnonzero(held & (labels == label)))
        weights = train_counts[label] if label < len(train_counts) else np.zeros(k)
        if weights.sum() == 0:
            weights = np.ones(k)
        quotas = _largest_remainder(len(positions), weights, rng)
        owner[positions] = np.repeat(np.arange(k), quotas)
    return owner


def _largest_remainder(total: int, weights: Sequence[float] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights`` (ties broken at random)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.lexsort((rng.random(len(weights)), -remainder))
    counts[order[: total - counts.sum()]] += 1
    return counts
