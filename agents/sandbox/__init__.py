"""Running generated code: the runner (a test per fresh interpreter), its process group and limits, the
reaper, the bubblewrap backend and the harness the sandboxed interpreter runs.
"""
