"""Partitioning: disjoint and complete, deterministic, IID balance, Dirichlet skew, refusals."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslm_secure.config import PartitionConfig
from crosslm_secure.data.partition import MIN_TRAIN_PER_CLIENT, partition_clients
from crosslm_secure.data.records import Example, TaskData
from crosslm_secure.errors import DataError


def _examples(labels: list[int], prefix: str) -> list[Example]:
    return [Example(uid=f"{prefix}:{i}", text=f"text {i}", label=y) for i, y in enumerate(labels)]


def _ids(k: int) -> list[str]:
    return [f"client-{i + 1}" for i in range(k)]


def _all_uids(split: TaskData) -> tuple[list[str], list[str]]:
    train = [ex.uid for client in split.clients for ex in client.train]
    test = [ex.uid for client in split.clients for ex in client.test] + [ex.uid for ex in split.llm_test]
    return train, test


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(2, 6),
    train_labels=st.lists(st.integers(0, 3), min_size=24, max_size=120),
    test_labels=st.lists(st.integers(0, 3), min_size=0, max_size=60),
    scheme=st.sampled_from(["iid", "dirichlet"]),
    alpha=st.floats(0.05, 10.0),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31),
)
def test_partition_is_disjoint_complete_and_sized(
    k: int,
    train_labels: list[int],
    test_labels: list[int],
    scheme: str,
    alpha: float,
    fraction: float,
    seed: int,
) -> None:
    train, test = _examples(train_labels, "tr"), _examples(test_labels, "te")
    cfg = PartitionConfig(clients=k, scheme=scheme, alpha=alpha, client_test_fraction=fraction)
    split = partition_clients(train, test, cfg, _ids(k), seed=seed)
    train_uids, test_uids = _all_uids(split)
    assert sorted(train_uids) == sorted(ex.uid for ex in train)
    assert sorted(test_uids) == sorted(ex.uid for ex in test)
    assert len(set(train_uids)) == len(train_uids) and len(set(test_uids)) == len(test_uids)
    assert [client.client_id for client in split.clients] == _ids(k)
    assert all(len(client.train) >= MIN_TRAIN_PER_CLIENT for client in split.clients)
    # Records keep their input order inside each part.
    for client in split.clients:
        positions = [int(ex.uid.split(":")[1]) for ex in client.train]
        assert positions == sorted(positions)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_partition_other_seed_other_partition(scheme: str) -> None:
    train = _examples([i % 3 for i in range(90)], "tr")
    test = _examples([i % 3 for i in range(30)], "te")
    cfg = PartitionConfig(scheme=scheme)
    first = partition_clients(train, test, cfg, _ids(3), seed=7)
    again = partition_clients(train, test, cfg, _ids(3), seed=7)
    other = partition_clients(train, test, cfg, _ids(3), seed=8)
    assert first == again
    assert first != other


def test_iid_gives_every_client_the_same_label_mix() -> None:
    train = _examples([0] * 30 + [1] * 60 + [2] * 90, "tr")
    test = _examples([0] * 10 + [1] * 20 + [2] * 30, "te")
    cfg = PartitionConfig(scheme="iid", client_test_fraction=0.5)
    split = partition_clients(train, test, cfg, _ids(3), seed=0)
    for client in split.clients:
        assert Counter(ex.label for ex in client.train) == {0: 10, 1: 20, 2: 30}
    for label, held in ((0, 5), (1, 10), (2, 15)):
        per_client = [sum(ex.label == label for ex in client.test) for client in split.clients]
        assert sum(per_client) == held and max(per_client) - min(per_client) <= 1
    assert Counter(ex.label for ex in split.llm_test) == {0: 5, 1: 10, 2: 15}


def _label_shares(examples: list[Example]) -> list[float]:
    counts = Counter(ex.label for ex in examples)
    return [counts[label] / max(1, len(examples)) for label in range(3)]


def _mean_distance_from_uniform(split: TaskData) -> float:
    """Mean total-variation distance of the clients' train label shares from 1/3 each."""
    distances = [0.5 * sum(abs(share - 1 / 3) for share in _label_shares(client.train)) for client in split.clients]
    return sum(distances) / len(distances)


def test_dirichlet_small_alpha_skews_labels_and_test_follows_train() -> None:
    train = _examples([i % 3 for i in range(600)], "tr")
    test = _examples([i % 3 for i in range(300)], "te")
    skewed = partition_clients(train, test, PartitionConfig(scheme="dirichlet", alpha=0.1), _ids(3), seed=1)
    iid = partition_clients(train, test, PartitionConfig(scheme="iid"), _ids(3), seed=1)
    assert _mean_distance_from_uniform(skewed) > 0.25
    assert _mean_distance_from_uniform(iid) < 0.01
    for client in skewed.clients:
        for train_share, test_share in zip(_label_shares(client.train), _label_shares(client.test), strict=True):
            assert abs(train_share - test_share) < 0.05
    assert len(skewed.llm_test) == 120


def test_too_few_records_are_refused_with_a_fix() -> None:
    train = _examples([0, 1] * 5, "tr")
    with pytest.raises(DataError, match=r"10 training records cannot give 3 clients 4 each"):
        partition_clients(train, [], PartitionConfig(), _ids(3), seed=0)


def test_duplicate_client_ids_are_refused() -> None:
    train = _examples([0, 1] * 10, "tr")
    with pytest.raises(DataError, match="unique"):
        partition_clients(train, [], PartitionConfig(), ["a", "a"], seed=0)


def test_scarce_sites_get_exactly_n_records_of_every_label_and_the_rest_stays_unused() -> None:
    train = _examples([0] * 30 + [1] * 20 + [2] * 12, "train")
    test = _examples([0, 1, 2] * 10, "test")
    cfg = PartitionConfig(clients=3, records_per_class=4)
    split = partition_clients(train, test, cfg, _ids(3), seed=5)
    for client in split.clients:
        assert Counter(ex.label for ex in client.train) == {0: 4, 1: 4, 2: 4}
    dealt, _ = _all_uids(split)
    assert len(dealt) == len(set(dealt)) == 36  # 62 train records, 26 unused by any client
    again = partition_clients(train, test, cfg, _ids(3), seed=5)
    assert [[ex.uid for ex in c.train] for c in again.clients] == [[ex.uid for ex in c.train] for c in split.clients]
    other = partition_clients(train, test, cfg, _ids(3), seed=6)
    assert [[ex.uid for ex in c.train] for c in other.clients] != [[ex.uid for ex in c.train] for c in split.clients]
    # The held-out sets stay an even stratified split of the test records.
    assert all(Counter(ex.label for ex in c.test) == {0: 2, 1: 2, 2: 2} for c in split.clients)


def test_scarce_sites_asking_more_of_a_label_than_there_is_are_refused_naming_it() -> None:
    train = _examples([0] * 30 + [1] * 20 + [2] * 11, "train")
    cfg = PartitionConfig(clients=3, records_per_class=4)
    with pytest.raises(DataError) as refused:
        partition_clients(train, [], cfg, _ids(3), seed=0, label_names=["bad", "fine", "good"])
    assert str(refused.value) == (
        "partition: partition.records_per_class=4 for 3 clients needs 12 training records of label 'good', "
        "but the task has 11; lower records_per_class or partition.clients"
    )


def test_records_per_class_is_refused_with_a_dirichlet_split() -> None:
    with pytest.raises(ValueError, match="partition.records_per_class applies to scheme iid only"):
        PartitionConfig(scheme="dirichlet", records_per_class=8)
