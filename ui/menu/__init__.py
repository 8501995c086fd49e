"""The prompt_toolkit menu and the actions behind its options and flags (follow a run, logs, compare,
configuration, TensorBoard export).
"""
