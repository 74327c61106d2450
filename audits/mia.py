"""Membership-inference audit of the run's SLMs and LLM.

Usage: python audits/mia.py --run runs/<id>   (the same as `crosslm audit mia --run runs/<id>`)
Exit code: 0 pass, 1 a check failed, 2 the audit could not run.
"""

import sys

from crosslm_secure.audit.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("mia"))
