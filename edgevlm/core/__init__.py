"""The core every layer may import: stage descriptions and names, numeric metrics.

Nothing here imports another edgevlm package except ``edgevlm.errors``; see
docs/architecture.md for the layer order that tests/test_layering.py enforces.
"""
