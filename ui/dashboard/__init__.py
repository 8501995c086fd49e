"""The Rich dashboard: a frozen frame of the state (frame), its sources (live or replay), the screen
that lays out the views, keys and controls, and the app that runs it.
"""
