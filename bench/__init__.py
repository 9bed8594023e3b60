"""Benchmarks: scripts that print numbers (see README.md here); never imported by the service."""
