"""A stand-in for a vLLM server, for tests and benchmarks: it speaks `/health`, `/v1/models`
and `/v1/chat/completions` as vLLM does, validates every request (messages, image parts,
response_format), answers with schema-valid JSON derived from the request, counts what it
answered, and injects latency, 5xx, timeouts and malformed JSON at configured rates.

Faults are decided from the request body and how often that body was seen, so two servers with
the same settings fail the same requests the same way.

    python tests/support/standin_server.py --port 0 --latency 0.1    # prints "listening on URL"

It imports nothing but the standard library, so that it also runs as a script in its own
process (`bench/_support.py` starts it so).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "standin/vl-model"
COLOURS = ("black", "white", "grey", "red", "pink", "orange", "yellow", "green", "blue", "purple")


@dataclass
class Settings:
    model: str = MODEL
    latency_s: float = 0.0
    p_5xx: float = 0.0
    p_timeout: float = 0.0
    p_malformed: float = 0.0
    hang_s: float = 2.0
    seed: int = 0
    fail_after: int | None = None  # answers given before the server dies (drops every request)


@dataclass
class Tally:
    requests: int = 0
    rejected: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # body hash -> 200 replies
    seen: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0  # most requests being answered at once
    images: set[str] = field(default_factory=set)  # sha256 of every image's bytes received
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "rejected": self.rejected,
                "faults": dict(self.faults),
                "answered": sum(self.answered.values()),
                "answered_twice": sum(1 for n in self.answered.values() if n > 1),
                "peak_in_flight": self.peak_in_flight,
            }


def validate(body: Any, settings: Settings) -> str | None:
    """Why a chat completion request is invalid, or None."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if body.get("model") != settings.model:
        return f"model {body.get('model')!r} is not served (serving {settings.model!r})"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for message in messages:
        if message.get("role") not in ("system", "user", "assistant"):
            return f"unknown role {message.get('role')!r}"
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return "content must be a string or a list of parts"
        for part in content:
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                continue
            if part.get("type") != "image_url":
                return f"unknown content part {part.get('type')!r}"
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:"):
                match = re.fullmatch(r"data:image/[\w.+-]+;base64,(.+)", url, re.S)
                if not match:
                    return "an image data URI must be data:image/<type>;base64,<data>"
                try:
                    base64.b64decode(match.group(1), validate=True)
                except ValueError:
                    return "the image data URI is not valid base64"
            elif not url.startswith(("http://", "https://")):
                return f"image_url must be a data URI or an http(s) URL, not {url[:40]!r}"
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    if (body.get("response_format") or {}).get("type") != "json_schema":
        return "response_format must be {type: json_schema, json_schema: {name, schema}}"
    required = {
        "extraction": {"visual_description", "attributes"},
        "intervention_plan": {"interventions"},
        "completed_negative": {"text", "visual_description"},
    }
    name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
    if name not in required:
        return f"unknown response schema {name!r}"
    if not required[name] <= set(schema.get("properties", {})):
        return f"the {name} schema lacks {sorted(required[name])}"
    return None


def _user_text(body: dict[str, Any]) -> str:
    return "\n".join(
        part.get("text", "")
        for message in body["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for part in message["content"]
        if isinstance(part, dict)
    )


def _image_digests(body: dict[str, Any]) -> set[str]:
    """sha256 of the bytes of every image part (data URIs) of a request."""
    digests = set()
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
            if url.startswith("data:"):
                data = base64.b64decode(url.split(",", 1)[1])
                digests.add(hashlib.sha256(data).hexdigest())
    return digests


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0] if start in text else ""


def plan_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Template 2: change the first key attribute of the asked modality to its value reversed."""
    text = _user_text(body)
    modality = re.search(r"in the (text|image) modality", text)
    wanted = modality.group(1) if modality else "text"
    keys = [
        json.loads(line)
        for line in text.splitlines()
        if line.startswith('{"modality"') and '"is_key": true' in line
    ]
    chosen = next((k for k in keys if k["modality"] == wanted), keys[0] if keys else None)
    if chosen is None:
        return {
            "interventions": [
                {"modality": wanted, "name": "none", "from_value": "x", "to_value": "y"}
            ]
        }
    value = chosen["value"]
    new = value[::-1] if value[::-1] != value else f"{value} plus"
    return {
        "interventions": [
            {
                "modality": chosen["modality"],
                "name": chosen["name"],
                "from_value": value,
                "to_value": new,
            }
        ]
    }


def completion_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Template 3: the item text and visual description with the values replaced."""
    text = _user_text(body)
    item_text = _between(text, "Item text:\n", "\n\nWhat its image shows:")
    visual = _between(text, "What its image shows:\n", "\n\nInterventions")
    for line in _between(text, "to_value):\n", "\n\n").splitlines():
        match = re.fullmatch(r"(text|image) (.+?): (.+) -> (.+)", line.strip())
        if not match:
            continue
        modality, _, old, new = match.groups()
        pattern = re.compile(re.escape(old), re.IGNORECASE)
        if modality == "text":
            item_text = pattern.sub(new, item_text)
        else:
            visual = pattern.sub(new, visual)
    return {"text": item_text, "visual_description": None if visual == "(no image)" else visual}


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid answer derived from the request, for the schema it asks for."""
    name = body["response_format"]["json_schema"].get("name")
    if name == "intervention_plan":
        return plan_answer(body)
    if name == "completed_negative":
        return completion_answer(body)
    return extraction_answer(body)


def extraction_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid extraction derived from the request's text and image."""
    text = " ".join(
        part.get("text", "") if isinstance(part, dict) else ""
        for message in body["messages"]
        if message["role"] == "user"
        for part in (message["content"] if isinstance(message["content"], list) else [])
    ) or str(body["messages"][-1]["content"])
    has_image = any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in body["messages"]
        for part in (message["content"] if isinstance(message["content"], list) else [])
    )
    title = re.search(r"Title: (.+)", text)
    words = re.findall(r"[a-z]+", (title.group(1) if title else text).lower())
    attributes = [
        {"modality": "text", "name": "colour", "value": w, "is_key": True}
        for w in dict.fromkeys(w for w in words if w in COLOURS)
    ]
    if words:
        attributes.append(
            {"modality": "text", "name": "first word", "value": words[0], "is_key": False}
        )
    if has_image:
        attributes.append(
            {"modality": "image", "name": "format", "value": "picture", "is_key": False}
        )
    return {
        "visual_description": "A product photo." if has_image else None,
        "attributes": attributes,
    }


def make_handler(settings: Settings, tally: Tally) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(
                    200, {"object": "list", "data": [{"id": settings.model, "object": "model"}]}
                )
            elif self.path == "/stats":
                self._send(200, tally.snapshot())
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            problem = validate(body, settings)
            key = hashlib.sha256(raw).hexdigest()
            received = _image_digests(body) if problem is None else set()
            with tally.lock:
                tally.images |= received
                tally.requests += 1
                tally.seen[key] += 1
                nth = tally.seen[key]
                if problem:
                    tally.rejected += 1
            if problem:
                self._send(400, {"error": {"message": problem, "type": "BadRequestError"}})
                return
            with tally.lock:
                tally.in_flight += 1
                tally.peak_in_flight = max(tally.peak_in_flight, tally.in_flight)
            try:
                self._answer(body, raw, key, nth)
            finally:
                with tally.lock:
                    tally.in_flight -= 1

        def _answer(self, body: Any, raw: bytes, key: str, nth: int) -> None:
            if settings.latency_s:
                time.sleep(settings.latency_s)
            if settings.fail_after is not None:
                with tally.lock:
                    dead = sum(tally.answered.values()) >= settings.fail_after
                    if dead:
                        tally.faults["dead"] += 1
                if dead:
                    self.close_connection = True
                    return
            draw = random.Random(f"{settings.seed}:{key}:{nth}").random()
            fault = None
            if draw < settings.p_5xx:
                fault = "5xx"
            elif draw < settings.p_5xx + settings.p_timeout:
                fault = "timeout"
            elif draw < settings.p_5xx + settings.p_timeout + settings.p_malformed:
                fault = "malformed"
            if fault:
                with tally.lock:
                    tally.faults[fault] += 1
            if fault == "5xx":
                self._send(503, {"error": {"message": "injected failure"}})
                return
            if fault == "timeout":
                time.sleep(settings.hang_s)
                self.close_connection = True
                return
            content = json.dumps(answer(body))
            if fault == "malformed":
                content = content[: len(content) // 2]
            with tally.lock:
                tally.answered[key] += 1
            self._send(
                200,
                {
                    "id": f"chatcmpl-{key[:12]}",
                    "object": "chat.completion",
                    "model": settings.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(raw) // 4,
                        "completion_tokens": len(content) // 4,
                        "total_tokens": (len(raw) + len(content)) // 4,
                    },
                },
            )

    return Handler


def wait_until_healthy(base_url: str, seconds: float = 10.0) -> None:
    """Poll the server's /health until it answers 200."""
    health = base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(health, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.02)


class StandIn:
    """The server on a free loopback port, in a background thread."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.tally = Tally()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.settings, self.tally))
        self.server.daemon_threads = True
        self.server.timeout = 0.1  # handle_request returns this often when idle
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        # a loop of our own rather than serve_forever: its shutdown() once waited forever in CI
        while not self._stopping.is_set():
            self.server.handle_request()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def overrides(self) -> list[str]:
        """Config settings for the vLLM backend against this server: short timeouts and
        backoffs, so that injected faults cost the tests little time."""
        return [
            "llm.backend=vllm",
            f"llm.vllm.base_url={self.base_url}",
            f"llm.vllm.model={self.settings.model}",
            "llm.vllm.timeout_s=1.0",
            "llm.vllm.backoff_s=0.01",
            "llm.vllm.backoff_max_s=0.05",
        ]

    def __enter__(self) -> StandIn:
        self.thread.start()
        wait_until_healthy(self.base_url)
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self.thread.join(timeout=10)
        self.server.server_close()
        if self.thread.is_alive():
            raise RuntimeError("the stand-in server did not stop within 10 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--p-5xx", type=float, default=0.0)
    parser.add_argument("--p-timeout", type=float, default=0.0)
    parser.add_argument("--p-malformed", type=float, default=0.0)
    args = parser.parse_args()
    rates = {f"p_{fault}": getattr(args, f"p_{fault}") for fault in ("5xx", "timeout", "malformed")}
    settings = Settings(model=args.model, latency_s=args.latency, **rates)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(settings, Tally()))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
