"""Viewers: the Rich dashboard, the prompt_toolkit menu and the HTTP status server — ordinary bus clients."""
