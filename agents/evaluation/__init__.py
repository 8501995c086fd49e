"""Scoring a round: pass@1 with intervals (scoring), the round's outcome against the base (outcome), and
external trackers (tracker), how far the stage got (progress).
"""
