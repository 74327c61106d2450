"""Sweeps: grids of ordinary runs (one process each), resumable, aggregated into tables and plots."""
