"""Helpers for criticrm's own tests, benchmarks and smoke runs — not part of the library's API.

- `tiny`: a tiny random backbone with the default model's tokenizer (code paths in milliseconds);
- `rows`: hand-made training rows with canned critiques (training without running stage 1);
- `llamacpp`: start a llama.cpp server on loopback for the OpenAI-compatible backend.

Nothing in `criticrm` imports them; their outputs mean nothing about quality or speed of the method.
"""
