"""Protocol audit: the server held only a public 128-bit CKKS context, no secret key or per-client
score vector, and every message was signed and accepted once.

Usage: python audits/protocol.py --run runs/<id>   (the same as `crosslm audit protocol --run runs/<id>`)
Exit code: 0 pass, 1 a check failed, 2 the audit could not run.
"""

import sys

from crosslm_secure.audit.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("protocol"))
