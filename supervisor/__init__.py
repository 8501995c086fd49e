"""The supervisor daemon: broker, persister, control commands, pipeline driver and agent lifecycle."""
