"""Parties as folders: the one layout that simulation and deployment share.

A pilot has a coordinator (``server``), sites (``client-1``, ...) and a reviewer, each on its
own machine. Each party is a folder ``DIR/<party>/`` that only that party reads::

    DIR/server/keys/              the coordinator's signing and exchange keys (``crosslm keys init``)
    DIR/server/registry.json      every enrolled public identity (``crosslm keys enroll``)
    DIR/server/supernodes/<site>.pub  the sites' SuperNode authentication keys (public, enrolled)
    DIR/server/tls/               the coordinator's CA and SuperLink certificate (``crosslm pki coordinator``)
    DIR/server/eval.csv           the evaluator's labelled set: the coordinator's own data
    DIR/client-1/keys/            the site's keys and its SuperNode authentication key
    DIR/client-1/registry.json    the registry the site trusts (a copy the coordinator sent)
    DIR/client-1/ca.pem           the coordinator's CA certificate (deployment only)
    DIR/client-1/data.csv         the site's labelled records (or data.jsonl, or a datasets/ folder)
    DIR/client-1/state/<run-id>/  the site's state: its authoritative ledger, SLM checkpoints,
                                  synthetic store (laid out as a run folder's clients/<site>/)
    DIR/client-1/audit/<run-id>.json  the site's signed audit result, for the reviewer
    DIR/reviewer/registry.json    the registry the reviewer pinned (fingerprints compared out of band)

Nothing here reads a record: it names paths, and says in one sentence what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crosslm_secure.errors import CrossLMError

SERVER = "server"
REVIEWER = "reviewer"
KEYS_DIR = "keys"
REGISTRY_FILE = "registry.json"
CA_FILE = "ca.pem"
STATE_DIR = "state"
AUDIT_DIR = "audit"
EVAL_FILE = "eval.csv"
SUPERNODES_DIR = "supernodes"
TLS_DIR = "tls"
DATA_NAMES = ("data.csv", "data.jsonl", "datasets")
"""Where a site's records may be, in the order they are looked for."""


class PartyError(CrossLMError):
    """A party folder is missing, incomplete or belongs to another party."""


@dataclass(frozen=True)
class PartyFolder:
    """One party's folder ``DIR/<party>/``; the folder's name is the party's name."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def keys(self) -> Path:
        return self.root / KEYS_DIR

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILE

    @property
    def ca(self) -> Path:
        return self.root / CA_FILE

    @property
    def auth_key(self) -> Path:
        """The site's SuperNode authentication key (private, OpenSSH)."""
        return self.keys / "auth_key"

    @property
    def auth_pub(self) -> Path:
        return self.keys / "auth_key.pub"

    @property
    def audit_dir(self) -> Path:
        return self.root / AUDIT_DIR

    def audit_file(self, run_id: str) -> Path:
        """Where the site writes its signed audit of run ``run_id``."""
        return self.audit_dir / f"{run_id}.json"

    def state_root(self, run_id: str) -> Path:
        """The site's state for one run, laid out as a run folder (``clients/<site>/`` inside)."""
        return self.root / STATE_DIR / run_id

    # -- the coordinator's folder ---------------------------------------------------------

    @property
    def eval_set(self) -> Path:
        """The coordinator's own labelled evaluator set."""
        return self.root / EVAL_FILE

    @property
    def supernodes(self) -> Path:
        return self.root / SUPERNODES_DIR

    def supernode_key(self, site: str) -> Path:
        return self.supernodes / f"{site}.pub"

    @property
    def tls(self) -> Path:
        return self.root / TLS_DIR

    # -- lookups that fail with a sentence ------------------------------------------------

    def data(self) -> Path:
        """The site's records: ``data.csv``, ``data.jsonl`` or a ``datasets/`` folder.

        Raises:
            PartyError: none of them is there.
        """
        for name in DATA_NAMES:
            path = self.root / name
            if path.exists():
                return path
        raise PartyError(
            f"sites: {self.root} holds no records; put the site's labelled records there as "
            f"{', '.join(DATA_NAMES[:-1])} or a {DATA_NAMES[-1]}/ folder"
        )

    def require_keys(self) -> Path:
        """The keys folder, checked to exist.

        Raises:
            PartyError: the folder has no keys.
        """
        if not (self.keys / "identity.json").is_file():
            raise PartyError(
                f"sites: {self.root} has no keys; on that party's machine run "
                f"`crosslm keys init --site {self.name} --out {self.keys}`"
            )
        return self.keys


@dataclass(frozen=True)
class Sites:
    """A folder of party folders (``DIR``): ``DIR/server/`` and one folder per client."""

    root: Path

    def party(self, name: str) -> PartyFolder:
        """The folder of ``name``.

        Raises:
            PartyError: ``DIR/<name>/`` does not exist.
        """
        folder = PartyFolder(self.root / name)
        if not folder.root.is_dir():
            raise PartyError(
                f"sites: {self.root} has no folder for {name!r}; create {folder.root} with its keys "
                f"(and, for a site, its records), or make a simulated set with `crosslm sites split`"
            )
        return folder

    @property
    def server(self) -> PartyFolder:
        return self.party(SERVER)

    def clients(self, names: list[str]) -> dict[str, PartyFolder]:
        return {name: self.party(name) for name in names}

    def client_roots(self) -> list[Path]:
        """Every folder under ``DIR`` that is not the coordinator's or the reviewer's."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name not in (SERVER, REVIEWER))
