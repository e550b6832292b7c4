"""The `openai` Python client against lamina-compute-node's HTTP API.

Starts an attention node and a compute node on loopback (ports chosen by the
kernel), then uses the client as an application would: list models, a
completion, a chat completion, a streamed chat completion (same text as the
whole reply with the same seed), and the client's exceptions for an unknown
model and a wrong API key. Exits non-zero on the first failure.

    openai_client.py ATTENTION_NODE_BIN COMPUTE_NODE_BIN MODEL_PATH
"""
import os
import re
import signal
import subprocess
import sys
import tempfile

import openai
from openai import OpenAI

MODEL = "test-model"
KEY = "python-test-key-0123456789"


def start(cmd, env):
    """Starts cmd and waits for its 'listening on ADDR:PORT' line."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    for line in p.stdout:
        m = re.search(r"listening on \[?([^\]\s]+?)\]?:(\d+)\s*$", line)
        if m:
            return p, int(m.group(2))
    raise RuntimeError(f"{cmd[0]} exited ({p.wait()}) before it listened")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"  ok: {what}")


def run(port):
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=120)

    models = client.models.list()
    check([m.id for m in models.data] == [MODEL], f"models.list() gives [{MODEL}]")

    c = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(len(c.choices) == 1 and len(c.choices[0].text) > 0, f"completion text {c.choices[0].text!r}")
    check(c.choices[0].finish_reason in ("stop", "length"), "completion finish_reason")
    check(c.usage.completion_tokens > 0 and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens,
          "completion usage adds up")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, temperature=0)
    answer = chat.choices[0].message.content
    check(chat.choices[0].message.role == "assistant" and "Paris" in answer, f"chat answer {answer!r}")

    args = dict(model=MODEL, messages=[{"role": "user", "content": "Write a haiku about rain."}],
                max_tokens=24, temperature=0.9, seed=42)
    whole = client.chat.completions.create(**args).choices[0].message.content
    parts, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **args):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    check("".join(parts) == whole and len(parts) > 2, f"streamed chat equals the whole reply ({len(parts)} chunks)")
    check(finish in ("stop", "length"), "streamed chat ends with a finish_reason")

    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        check(False, "unknown model raises NotFoundError")
    except openai.NotFoundError:
        check(True, "unknown model raises NotFoundError")
    try:
        OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
        check(False, "wrong API key raises AuthenticationError")
    except openai.AuthenticationError:
        check(True, "wrong API key raises AuthenticationError")
    try:
        client.completions.create(model=MODEL, prompt="x", max_tokens=1, temperature=7)
        check(False, "temperature 7 raises BadRequestError")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "temperature", "temperature 7 raises BadRequestError naming the field")


def main():
    an_bin, cn_bin, model = sys.argv[1:4]
    env = dict(os.environ)
    env.setdefault("UCX_TLS", "tcp")
    env.setdefault("UCX_NET_DEVICES", "lo")
    env.setdefault("UCX_MM_ERROR_HANDLING", "y")
    env.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")
    env.setdefault("LAMINA_CLUSTER_TOKEN", "python-test-cluster-token-0123")
    env.setdefault("LAMINA_LOG_LEVEL", "warn")
    procs = []
    with tempfile.NamedTemporaryFile("w", prefix="lamina-key-") as key:
        key.write(KEY + "\n")
        key.flush()
        try:
            an, an_port = start([an_bin, "--model", model, "--port", "0", "--kv-capacity", "256M",
                                 "--threads", "1"], env)
            procs.append(an)
            cn, port = start([cn_bin, "--attention", f"127.0.0.1:{an_port}", "--model", model, "--http-port", "0",
                              "--model-name", MODEL, "--api-key-file", key.name], env)
            procs.append(cn)
            print(f"openai {openai.__version__} against lamina-compute-node on port {port}")
            run(port)
            cn.send_signal(signal.SIGTERM)
            rc = cn.wait(timeout=60)
            check(rc == 0, "the compute node exits 0 on SIGTERM")
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=30)
    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
