"""Generated Open Inference Protocol stubs (scripts/generate_oip_stubs.sh); do not edit.

Only `_pool.py` is written by hand: the private descriptor pool the stubs register in.
"""
