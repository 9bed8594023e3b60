"""Ingest: bytes in (streamed, hashed), validated before anything is stored, then stored and recorded."""
