"""Frozen-encoder embeddings kept across runs: per site, keyed by the encoder, never trusted when corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crosslm_secure.cache import ENV_VAR, SITES, site_cache
from crosslm_secure.client.features import FeatureCache, feature_store, set_public_centre
from crosslm_secure.config import SLMConfig
from crosslm_secure.models.batches import sentence_embeddings
from crosslm_secure.models.slm import load_slm
from tests.tiny_models import separable_examples, tiny_bert_dir

ENCODE = {"max_length": 24, "batch_size": 8}


@pytest.fixture(scope="module")
def slm(tmp_path_factory):
    folder = tiny_bert_dir(tmp_path_factory.mktemp("slm"), 3)
    return load_slm(SLMConfig(model=str(folder), trainable="head"), 3, torch.device("cpu"), seed=0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _texts(n: int = 24) -> tuple[list[str], list[str]]:
    examples = separable_examples(n // 3)
    return [ex.uid for ex in examples], [ex.text for ex in examples]


def test_a_later_run_reads_the_embeddings_instead_of_computing_them(slm, cache_dir) -> None:
    tokenizer, model = slm
    uids, texts = _texts()
    first = FeatureCache("client-1")
    computed = first.features(tokenizer, model, uids, texts, **ENCODE)
    assert first.reused == 0
    later = FeatureCache("client-1")  # a new run of the same site
    reread = later.features(tokenizer, model, uids, texts, **ENCODE)
    assert later.reused == len(texts)
    assert torch.equal(reread, computed)
    # Bitwise: a warm cache must give a run the same numbers as a cold one.
    assert torch.equal(computed, sentence_embeddings(tokenizer, model, texts, **ENCODE))


def test_new_records_are_embedded_and_added(slm, cache_dir) -> None:
    tokenizer, model = slm
    uids, texts = _texts(30)
    FeatureCache("client-1").features(tokenizer, model, uids[:12], texts[:12], **ENCODE)
    later = FeatureCache("client-1")
    got = later.features(tokenizer, model, uids, texts, **ENCODE)
    assert later.reused == 12
    assert torch.equal(got, sentence_embeddings(tokenizer, model, texts, **ENCODE))
    assert FeatureCache("client-1").features(tokenizer, model, uids, texts, **ENCODE).shape == got.shape


def test_embeddings_stay_in_their_owners_site_folder(slm, cache_dir) -> None:
    tokenizer, model = slm
    uids, texts = _texts()
    FeatureCache("client-2").features(tokenizer, model, uids, texts, **ENCODE)
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files, "the store was written"
    assert all(p.relative_to(cache_dir).parts[:2] == (SITES, "client-2") for p in files)
    other = FeatureCache("client-3")
    other.features(tokenizer, model, uids, texts, **ENCODE)
    assert other.reused == 0, "one site never reads another site's store"


def test_a_corrupt_store_is_discarded_and_rebuilt(slm, cache_dir) -> None:
    tokenizer, model = slm
    uids, texts = _texts()
    expected = FeatureCache("client-1").features(tokenizer, model, uids, texts, **ENCODE)
    (store_file,) = [p for p in (cache_dir / SITES / "client-1").rglob("*.json")]
    raw = bytearray(store_file.read_bytes())
    raw[-40] ^= 0xFF
    store_file.write_bytes(bytes(raw))
    again = FeatureCache("client-1")
    got = again.features(tokenizer, model, uids, texts, **ENCODE)
    assert again.reused == 0
    assert torch.equal(got, expected)
    assert store_file.is_file(), "the rebuilt store was written back"
    next_run = FeatureCache("client-1")
    next_run.features(tokenizer, model, uids, texts, **ENCODE)
    assert next_run.reused == len(texts), "the next run reads the rebuilt store"


def test_another_encoder_or_length_is_another_store(slm, cache_dir, tmp_path) -> None:
    tokenizer, model = slm
    uids, texts = _texts()
    FeatureCache("client-1").features(tokenizer, model, uids, texts, **ENCODE)
    shorter = FeatureCache("client-1")
    shorter.features(tokenizer, model, uids, texts, max_length=8, batch_size=8)
    assert shorter.reused == 0
    other_tokenizer, other = load_slm(
        SLMConfig(model=str(tiny_bert_dir(tmp_path, 3, seed=1)), trainable="head"), 3, torch.device("cpu"), seed=0
    )
    changed = FeatureCache("client-1")
    changed.features(other_tokenizer, other, uids, texts, **ENCODE)
    assert changed.reused == 0, "embeddings of other encoder weights are never reused"


def test_nothing_is_written_when_caching_is_off(slm, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "off")
    monkeypatch.chdir(tmp_path)
    tokenizer, model = slm
    uids, texts = _texts()
    cache = FeatureCache("client-1")
    cache.features(tokenizer, model, uids, texts, **ENCODE)
    assert site_cache("client-1") is None
    assert cache.reused == 0
    assert not list(tmp_path.rglob("*.json"))


def test_the_public_centre_is_computed_once_per_encoder(slm, cache_dir) -> None:
    tokenizer, model = slm
    set_public_centre(tokenizer, model, **ENCODE)
    first = model.feature_mean.clone()
    assert first.abs().sum() > 0
    entries = list((cache_dir / "public_centre").rglob("*.json"))
    assert len(entries) == 1, "the centre sits in the shared cache (public text only)"
    model.feature_mean.zero_()
    set_public_centre(tokenizer, model, **ENCODE)
    assert torch.equal(model.feature_mean, first)


@pytest.mark.parametrize("owner", ["", "../client-1", ".hidden", "a/b", "client 1"])
def test_a_site_cache_needs_a_plain_owner_name(owner: str, cache_dir) -> None:
    with pytest.raises(ValueError, match="plain name"):
        site_cache(owner)


def test_the_store_keeps_one_vector_per_distinct_text(slm, cache_dir) -> None:
    tokenizer, model = slm
    store = feature_store("client-1", tokenizer, model, max_length=24)
    got = store.embeddings(tokenizer, model, ["same text", "other", "same text"], **ENCODE)
    assert torch.equal(got[0], got[2]) and not torch.equal(got[0], got[1])
    assert store.reused == 1


def test_texts_of_one_run_only_are_not_kept(slm, cache_dir) -> None:
    tokenizer, model = slm
    uids, texts = _texts()
    cache = FeatureCache("client-1")
    synthetic = cache.features(tokenizer, model, uids, texts, keep=False, **ENCODE)
    assert not (cache_dir / SITES / "client-1").exists(), "a round's synthetic samples stay out of the site cache"
    assert torch.equal(synthetic, sentence_embeddings(tokenizer, model, texts, **ENCODE))
