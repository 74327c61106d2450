"""Ledger audit: hash chains intact, epsilon recomputed independently (dp-accounting), no client over budget.

Usage: python audits/ledger.py --run runs/<id>   (the same as `crosslm audit ledger --run runs/<id>`)
Exit code: 0 pass, 1 a check failed, 2 the audit could not run.
"""

import sys

from crosslm_secure.audit.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("ledger"))
