"""The Anthropic Messages API front (issue #15), so Claude Code gets the gateway's routing,
failover and accounting.

    request.py   the Messages body: checked as Anthropic checks it, translated to the internal form
    options.py   tools, tool_choice, thinking and sampling
    wire.py      answers back: the stream's events in order, the whole message, usage
    handlers.py  POST /v1/messages and /v1/messages/count_tokens
    models.py    GET /v1/models in Anthropic's shape
"""
