"""CKKS aggregation costs: throughput, bytes on the wire per score, scaling in K and N.

Run: ``python benchmarks/he_costs.py [--count 10000] [--repeat 3]``. Prints a table and
writes ``benchmarks/results/he_costs.json``. Each row is one full protected round through
``CKKSAggregator`` (clip, mask, encrypt, sign; server verify + add; decryptor verify + decrypt)
with noise off, so ``max_error`` is the CKKS error of the revealed mean.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from crosslm_secure.aggregation.ckks import CKKSAggregator
from crosslm_secure.crypto.ceremony import accept_public_context, accept_secret_context, deal_context
from crosslm_secure.crypto.ckks import PRESETS, ciphertext_count
from crosslm_secure.crypto.keys import ParticipantKeys, Registry

RESULTS = Path(__file__).parent / "results" / "he_costs.json"
RUN_ID = "bench"


def _federation(preset: str, k: int):
    clients = [ParticipantKeys.generate(f"client-{i:02d}") for i in range(1, k + 1)]
    registry = Registry([c.public() for c in clients])
    start = time.perf_counter()
    dealt = deal_context(clients[0], registry, run_id=RUN_ID, preset=preset)
    contexts = [dealt.secret_context] + [
        accept_secret_context(
            c, registry, announcement=dealt.announcement, wrapped=dealt.wrapped[c.site], run_id=RUN_ID
        )
        for c in clients[1:]
    ]
    public = accept_public_context(
        registry, announcement=dealt.announcement, public_context=dealt.public_context, run_id=RUN_ID
    )
    ceremony_s = time.perf_counter() - start
    parties = [
        CKKSAggregator.for_client(c, ctx, registry, run_id=RUN_ID) for c, ctx in zip(clients, contexts, strict=True)
    ]
    server = CKKSAggregator.for_server(public, registry, run_id=RUN_ID)
    sizes = {
        "public_context_bytes": len(dealt.public_context),
        "key_wrap_bytes": len(next(iter(dealt.wrapped.values()))),
    }
    return parties, server, ceremony_s, sizes


def measure(preset: str, k: int, count: int, repeat: int) -> dict:
    parties, server, ceremony_s, sizes = _federation(preset, k)
    sites = [p._keys.site for p in parties]  # noqa: SLF001 - benchmark introspection
    scores = np.random.default_rng(k).random((k, count))
    protect_s, combine_s, reveal_s, errors = [], [], [], []
    for round_index in range(repeat):
        start = time.perf_counter()
        blobs = [
            p.protect(s, round_index=round_index, participants=sites).contribution
            for p, s in zip(parties, scores, strict=True)
        ]
        protect_s.append((time.perf_counter() - start) / k)
        start = time.perf_counter()
        aggregate = server.combine(blobs)
        combine_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        mean = parties[-1].reveal(aggregate, blobs, count=count)
        reveal_s.append(time.perf_counter() - start)
        errors.append(float(np.max(np.abs(mean - scores.mean(axis=0)))))
    protect, combine, reveal = (float(np.median(x)) for x in (protect_s, combine_s, reveal_s))
    return {
        "preset": preset,
        "N": PRESETS[preset].poly_modulus_degree,
        "K": k,
        "count": count,
        "contribution_bytes": len(blobs[0]),
        "bytes_per_score": len(blobs[0]) / count,
        "bytes_per_slot": len(blobs[0]) / (ciphertext_count(PRESETS[preset], count) * PRESETS[preset].slots),
        "aggregate_bytes": len(aggregate),
        "server_in_bytes_per_score": k * len(blobs[0]) / count,
        "protect_s_per_client": protect,
        "protect_scores_per_s": count / protect,
        "combine_s": combine,
        "combine_scores_per_s": count * k / combine,
        "reveal_s": reveal,
        "reveal_scores_per_s": count / reveal,
        "max_error": max(errors),
        "ceremony_s": ceremony_s,
        **sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="Scores per client per round.")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds per setting (median reported).")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 3, 5, 10])
    args = parser.parse_args()
    rows = [measure(preset, k, args.count, args.repeat) for preset in ("n4096", "n8192") for k in args.clients]
    header = (
        f"{'preset':<6} {'K':>3} {'B/score':>8} {'B/slot':>7} {'protect/s':>10} "
        f"{'combine/s':>10} {'reveal/s':>9} {'agg MB':>9} {'max err':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['preset']:<6} {r['K']:>3} {r['bytes_per_score']:>8.1f} {r['bytes_per_slot']:>7.1f} "
            f"{r['protect_scores_per_s']:>10.0f} "
            f"{r['combine_scores_per_s']:>10.0f} {r['reveal_scores_per_s']:>9.0f} "
            f"{r['aggregate_bytes'] / 1e6:>9.2f} {r['max_error']:>9.1e}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "processor": platform.machine()},
                "count": args.count,
                "repeat": args.repeat,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
