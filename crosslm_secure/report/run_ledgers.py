"""The ledgers of a finished run, verified as a reviewer needs them: complete, of this run, signed.

``crosslm budget`` and the ledger audit both read ledgers through :func:`verified_ledger`, so a
ledger that is missing, empty, headless, truncated, of another run, or not signed by the site's
enrolled key is refused in the same words by both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import PublicIdentity
from crosslm_secure.errors import CryptoError
from crosslm_secure.privacy.ledger import LedgerEntry, LedgerError, ledger_path, load_entries, verify_entry
from crosslm_secure.runstore import RunStore


def enrolled_identities(store: RunStore) -> dict[str, list[PublicIdentity]]:
    """Site -> the public keys recorded in ``run.json`` for it.

    Raises:
        LedgerError: a recorded identity is malformed (its fingerprint no longer matches).
    """
    out: dict[str, list[PublicIdentity]] = {}
    for site, raws in store.enrolled_keys().items():
        try:
            out[site] = [PublicIdentity.from_dict(raw) for raw in raws]
        except CryptoError as exc:
            raise LedgerError(f"run.json: the enrolled key of {site} is damaged ({exc})") from None
    return out


def ledger_problems(
    store: RunStore, client_id: str, identities: dict[str, list[PublicIdentity]]
) -> tuple[list[LedgerEntry], list[str]]:
    """One client's chain-verified ledger of a finished run, and why its entries cannot be trusted.

    The problems (one line per entry): an entry of another run, a missing or bad signature
    (checked whenever the run records enrolled keys).

    Raises:
        LedgerError: the ledger is missing, empty, headless, truncated or tampered.
    """
    path = ledger_path(store.root, client_id)
    entries = load_entries(path, client_id=client_id, finished=True)
    name = f"clients/{client_id}/{path.name}"
    run_id = store.run_id
    problems = [
        f"{name} line {number} records run {entry.run_id!r}, not this run ({run_id!r}); "
        "a ledger shows only its own run's releases"
        for number, entry in enumerate(entries, start=1)
        if entry.run_id != run_id
    ]
    if identities:  # runs made before ledgers were signed record no keys: the audit reports that
        for number, entry in enumerate(entries, start=1):
            problem = verify_entry(entry, identities.get(client_id, []))
            if problem is not None:
                problems.append(f"{name} line {number} {problem}")
    return entries, problems


def verified_ledger(
    store: RunStore, client_id: str, identities: dict[str, list[PublicIdentity]] | None = None
) -> list[LedgerEntry]:
    """One client's ledger of a finished run, every check a reader relies on applied.

    Args:
        store: the run.
        client_id: a client of the run's config.
        identities: enrolled keys (default: those in ``run.json``).

    Raises:
        LedgerError: the ledger is missing, empty, headless, truncated or tampered; an entry
            belongs to another run; or a signature is missing or does not verify.
    """
    keys = enrolled_identities(store) if identities is None else identities
    entries, problems = ledger_problems(store, client_id, keys)
    if problems:
        raise LedgerError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    return entries


def run_client_ids(run_dir: Path) -> list[str]:
    """The clients the run's config declares (every one must have a ledger)."""
    from crosslm_secure.config import config_from_dict

    return config_from_dict(RunStore.open(run_dir).config_dict()).client_ids()


@dataclass(frozen=True)
class ConfiguredDPSGD:
    """The DP-SGD mechanism a client's config and record count fix, before any training.

    ``noise_multiplier`` is ``privacy.noise_multiplier`` when set, else the one recomputed from
    ``target_epsilon`` for all planned steps (what DPTrainer derives); the audits compare the
    ledger against this, never the other way round.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    delta: float
    planned_steps: int


def configured_dp_sgd(config: Config, client_id: str, num_records: int) -> ConfiguredDPSGD:
    """The mechanism ``config`` prescribes for ``client_id`` holding ``num_records`` records.

    Raises:
        PrivacyError: the config's target is out of reach (as it was at run time).
    """
    from crosslm_secure.client.schedule import private_schedule
    from crosslm_secure.privacy.accounting import noise_multiplier_for

    privacy = config.privacy
    schedule = private_schedule(config.slm_for(client_id), num_records)
    delta = privacy.delta_for(num_records)
    planned = max(1, config.run.rounds * schedule.steps)
    if privacy.noise_multiplier is not None:
        noise = float(privacy.noise_multiplier)
    else:
        noise = noise_multiplier_for(
            target_epsilon=float(privacy.target_epsilon),
            delta=delta,
            sample_rate=schedule.sample_rate,
            steps=planned,
            accountant=privacy.accountant,
        )
    return ConfiguredDPSGD(noise, schedule.sample_rate, schedule.steps, delta, planned)


def mechanism_disagreements(entry: LedgerEntry, expected: ConfiguredDPSGD) -> list[str]:
    """Where a DP-SGD ledger entry differs from the configured mechanism (empty when it agrees)."""
    out = []
    for name, recorded, wanted in (
        ("noise_multiplier", entry.noise_multiplier, expected.noise_multiplier),
        ("sample_rate", entry.sample_rate, expected.sample_rate),
        ("delta", entry.delta, expected.delta),
    ):
        if recorded is None or not math.isclose(float(recorded), wanted, rel_tol=1e-6, abs_tol=0.0):
            out.append(f"{name} {recorded} but the config gives {wanted:.6g}")
    if entry.steps > expected.steps_per_round:
        out.append(f"{entry.steps} steps but the config plans {expected.steps_per_round} per round")
    return out


def score_release_disagreements(entry: LedgerEntry, noise_sigma: float) -> list[str]:
    """Where a score-release entry differs from the release ``feedback.noise_sigma`` gives (empty when it agrees).

    The entry's count and contributors (its ``details``) with the configured sigma give the
    noise and sensitivity it must record (crypto/noise.py); they are recomputed, not read back.
    """
    from crosslm_secure.crypto.noise import release_parameters

    details = entry.details
    try:
        count, contributors = int(details["count"]), int(details["contributors"])
        recorded_sigma = float(details["sigma_total"])
        expected = release_parameters(sigma_total=noise_sigma, contributors=contributors, count=count)
    except (KeyError, TypeError, ValueError, CryptoError) as exc:
        return [f"the release cannot be recomputed from its count, contributors and sigma_total ({exc})"]
    out = []
    if not math.isclose(recorded_sigma, noise_sigma, rel_tol=1e-9):
        out.append(f"noise sigma {recorded_sigma:g} but the config's feedback.noise_sigma is {noise_sigma:g}")
    for name, recorded, wanted in (
        ("noise_std", entry.noise_std, expected.honest_share_only),
        ("sensitivity", entry.sensitivity, expected.l2_sensitivity),
    ):
        if recorded is None or not math.isclose(float(recorded), wanted, rel_tol=1e-6):
            out.append(
                f"{name} {recorded} but the config gives {wanted:.6g} (feedback.noise_sigma {noise_sigma:g}, "
                f"{count} scores, {contributors} contributors)"
            )
    return out
