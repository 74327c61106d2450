"""Audits a compliance reviewer runs on a finished run: membership inference, DP, protocol, ledger."""
