"""The teacher: an OpenAI-compatible client (request, reply, transport, retry policy, attempts, parking, a
pool of endpoints), a local transformers teacher, the types and protocol they share (``base``), opening the
configured one (``factory``), its failures as the stage keeps them, and the accounting of what it costs
(usage, pricing, spend, the generate stage's account).
"""
