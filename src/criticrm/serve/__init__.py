"""HTTP serving of a trained reward model (`criticrm serve`): app, batching, client.

Kept import-light: the deprecated `reward_func.py` in here may still be loaded by path inside RLHF
trainers' environments (the adapters now live in `criticrm.integrations`).
"""
