"""The bus: the shared contract of the AutoTrain supervisor.

Everything that crosses a process boundary lives here: the configuration, the frozen v1.0 event, the run
state and its reducer, redaction, the wire codec with its signing, the connection file, and the typed
clients (publisher for agents, subscriber for viewers, control client). It is the only package that
touches ZeroMQ sockets or msgpack.
"""
