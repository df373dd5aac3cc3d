"""``glm-token-saver demo``: the gateway against simulated backends, and example requests for it.

    glm-token-saver demo                                   # no model, no key
    glm-token-saver example escalation | curl -si http://127.0.0.1:8000/v1/chat/completions \\
        -H 'Content-Type: application/json' -d @- | grep x-glm
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any, Callable

import attrs

from config import GatewayConfig
from gateway import server
from gateway.logs import setup_logging

if TYPE_CHECKING:  # the simulators load only for the demo, never for serve
    from backends.sim import CerebrasSim, LlamaCppSim

DEMO_LOCAL = (
    "Hello from the simulated local llama.cpp server. Easy turns like this one are served "
    "locally for free."
)
DEMO_CLOUD = (
    "Hello from simulated Cerebras GLM 4.7. Hard tasks like this one (an open investigation, "
    "a design, a change across components) go to the fast, paid cloud."
)
# What separates them is scope, not vocabulary: the easy one names the place and the change.
DEMO_EASY = 'Fix the typo "recieve" in README.md'
DEMO_HARD = "Invoice numbers sometimes repeat after a deploy. Find out why and fix it."

# Cline's own texts after the local model failed twice: a SEARCH block that matched nothing, then
# an answer with no tool. Two failed turns among the last four move the conversation to the cloud.
SEARCH_MISS = ("The tool execution failed with the following error:\n<error>\nThe SEARCH block:\n"
               "def recieve():\n...does not match anything in the file.\n</error>")
NO_TOOL = "[ERROR] You did not use a tool in your previous response! Please retry with a tool use."


def _cline(task: str, *turns: tuple[str, str]) -> list[dict[str, Any]]:
    """A classic Cline conversation: the task, then (assistant text, Cline's reply) turns."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are Cline, a highly skilled software engineer."},
        {"role": "user", "content": [{"type": "text", "text": f"<task>\n{task}\n</task>"}]}]
    for said, reply in turns:
        messages += [{"role": "assistant", "content": said},
                     {"role": "user", "content": [{"type": "text", "text": reply}]}]
    return messages


EXAMPLES: dict[str, Callable[[str], dict[str, Any]]] = {
    "easy": lambda model: {"model": model, "messages": _cline(DEMO_EASY)},
    "hard": lambda model: {"model": model, "messages": _cline(DEMO_HARD)},
    "escalation": lambda model: {"model": model, "messages": _cline(
        DEMO_EASY,
        ("<replace_in_file><path>README.md</path></replace_in_file>",
         f"[replace_in_file for 'README.md'] Result:\n{SEARCH_MISS}"),
        ("The typo is fixed.", NO_TOOL))},
}


def demo_backends() -> tuple["LlamaCppSim", "CerebrasSim"]:
    """The demo's simulated llama-server and Cerebras (not started yet).

    The local one holds as much context as ``backends["local"].context_window`` (65,536 tokens by
    default), since the gateway learns its real window from its ``/props``: Cline's system prompt
    alone is 8k-12k tokens, so a smaller simulated window sent every Cline request to the cloud
    (``context``) and made the router look as if it never served anything locally (issue #12).
    """
    from backends.sim import CerebrasSim, LlamaCppSim, Script

    local = LlamaCppSim(Script(content=DEMO_LOCAL), tokens_per_s=25,
                        n_ctx=GatewayConfig().backends["local"].context_window)
    cloud = CerebrasSim(Script(content=DEMO_CLOUD, reasoning="The user wants a greeting."),
                        tokens_per_s=250)
    return local, cloud


def demo_config(host: str, port: int, local_url: str, cloud_url: str, ledger_path: str) -> GatewayConfig:
    """The defaults, pointed at the demo's simulators."""
    cfg = GatewayConfig()
    return attrs.evolve(
        cfg,
        listen=attrs.evolve(cfg.listen, host=host, port=port),
        ledger=attrs.evolve(cfg.ledger, path=ledger_path),
        backends={
            "local": attrs.evolve(cfg.backends["local"], base_url=local_url, model="local-model"),
            "cloud": attrs.evolve(cfg.backends["cloud"], base_url=cloud_url, api_key="demo-key"),
        },
    )


async def run(host: str, port: int) -> None:
    """The gateway wired to a simulated llama-server and a simulated Cerebras: no model, no key."""
    local, cloud = demo_backends()
    local_url, cloud_url = await local.start(), await cloud.start()
    try:
        # Demo traffic must not land in a real ledger's savings and budgets.
        ledger = os.path.join(tempfile.mkdtemp(prefix="glm-demo-"), "ledger.sqlite3")
        cfg = demo_config(host, port, local_url, cloud_url, ledger)
        setup_logging(cfg)

        easy = DEMO_EASY.replace('"', '\\"')  # inside the JSON of a shell command
        claude = ('{"model": "claude-sonnet-4-5", "max_tokens": 512, "stream": true, '
                  f'"messages": [{{"role": "user", "content": "{easy}"}}]}}')

        async def banner(url: str) -> None:
            print(f"""
GLM Token Saver demo: gateway on {url}, simulated llama.cpp on {local_url}
({local.n_ctx} tokens of context), simulated Cerebras on {cloud_url}. Try:

  curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{cfg.models.routed}", "stream": true, "messages": [{{"role": "user", "content": "{easy}"}}]}}'

An easy task is served locally; a hard one goes to the cloud (see the x-glm-backend and
x-glm-route-reason response headers with curl -i):

  curl -Ni {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{cfg.models.routed}", "stream": true, "messages": [{{"role": "user", "content": "{DEMO_HARD}"}}]}}'

A conversation whose local model keeps failing moves to the cloud (x-glm-route-reason: escalated):

  glm-token-saver example escalation | curl -si {url}/v1/chat/completions \\
    -H 'Content-Type: application/json' -d @- | grep x-glm

The same through Anthropic's Messages API, as Claude Code speaks it:

  curl -N {url}/v1/messages -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \\
    -d '{claude}'

Or point Cline here: OpenAI Compatible provider, base URL {url}/v1, any API key, model ID
{cfg.models.routed}. Model ids: {cfg.models.routed} (routed), {cfg.models.local}, {cfg.models.cloud},
and {cfg.models.routed}@<backend> for each backend by name. Or Claude Code:
ANTHROPIC_BASE_URL={url} ANTHROPIC_AUTH_TOKEN=any claude
Ctrl-C stops.
""", flush=True)

        await server.serve(cfg, ready=banner)
    finally:
        await local.stop()
        await cloud.stop()

