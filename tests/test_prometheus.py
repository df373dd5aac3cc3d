"""A real Prometheus server scrapes the gateway and sees its counters rise."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import openai
import pytest

from tests.conftest import user
from tests.test_cli import free_port

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus (Debian package) is not installed")


async def query(http, prom: str, expr: str) -> float | None:
    async with http.get(f"{prom}/api/v1/query", params={"query": expr}) as resp:
        if resp.status != 200:
            return None
        result = (await resp.json())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def wait_for(http, prom: str, expr: str, predicate, timeout: float = 30.0) -> float:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            value = await query(http, prom, expr)
        except OSError:
            value = None
        if value is not None and predicate(value):
            return value
        await asyncio.sleep(0.25)
    raise AssertionError(f"Prometheus never saw {expr} satisfy the condition")


async def test_real_prometheus_sees_the_counters_rise(gateway_factory, http, tmp_path: Path):
    gateway = await gateway_factory()
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: glm-token-saver
    static_configs: [{{targets: ["127.0.0.1:{gateway.port}"]}}]
""")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom = f"http://127.0.0.1:{prom_port}"
    expr = 'sum(glm_gateway_requests_total{status="ok"})'
    try:
        async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as client:
            await client.chat.completions.create(model="glm-4.7", messages=user("Fix the typo"))
            first = await wait_for(http, prom, expr, lambda v: v >= 1)
            for i in range(3):
                await client.chat.completions.create(model="glm-4.7", messages=user(f"Fix the typo {i}"))
        assert await wait_for(http, prom, expr, lambda v: v >= first + 3) == first + 3
        assert await wait_for(http, prom, 'glm_gateway_backend_up{backend="local"}', lambda v: v == 1) == 1
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
