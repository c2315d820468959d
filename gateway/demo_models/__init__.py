"""Models the demo registry logs from code (MLflow's models-from-code): never imported by the
gateway, only logged by path (gateway.demo). Each answers the last user message back, a word a
chunk when streamed: enough to try ``"stream": true`` and OpenAI's client without any weights."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ECHO_AGENT = HERE / "echo_agent.py"
ECHO_CHAT = HERE / "echo_chat.py"
