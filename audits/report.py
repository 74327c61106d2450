"""Rebuild audit/report.md and audit/report.html from saved results.

Usage: python audits/report.py --run runs/<id>   (the same as `crosslm audit report --run runs/<id>`)
Exit code: 0 pass, 1 a check failed, 2 the audit could not run.
"""

import sys

from crosslm_secure.audit.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("report"))
