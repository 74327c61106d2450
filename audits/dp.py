"""One-run empirical DP audit (canaries) against the recorded epsilon.

Usage: python audits/dp.py --run runs/<id>   (the same as `crosslm audit dp --run runs/<id>`)
Exit code: 0 pass, 1 a check failed, 2 the audit could not run.
"""

import sys

from crosslm_secure.audit.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("dp"))
