"""Decoders: vectorised L2-L4 column decoding, and hardened deep decoders for sparse payloads."""
