"""One module per dashboard view; each is a pure function of a frame.
"""
