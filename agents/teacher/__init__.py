"""The teacher: an OpenAI-compatible client (request, reply, transport, retries, a pool of endpoints), a
local transformers teacher, and the accounting of what it costs (usage, pricing, spend).
"""
