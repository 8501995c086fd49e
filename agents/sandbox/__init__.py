"""Running generated code: the runner (a test per fresh interpreter), its process group and limits, the
reaper, the bubblewrap backend, the harness the sandboxed interpreter runs and the seccomp filter it
installs.
"""
