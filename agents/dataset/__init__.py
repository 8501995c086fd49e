"""The data of the loop: the task bank and held-out tasks, samples on disk (one JSONL reader per
policy), near-duplicate removal, the prompt template, and HumanEval for evaluation only.
"""
