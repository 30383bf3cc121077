"""Venue adapters: pure decoders (frames in, records out) and connection protocols (sans-IO)."""
