"""A stand-in for a vLLM server, for tests and benchmarks: it speaks `/health`, `/v1/models`
and `/v1/chat/completions` as vLLM does, and is as strict as one where the client could go wrong:

- it validates every request (messages, image parts, response_format) and decodes each image
  with Pillow (what does not decode is a 400), and compiles the JSON schema it is sent;
- started with an API key, it answers 401 to a `/v1` request without `Authorization: Bearer`
  that key, as `vllm serve` with VLLM_API_KEY does;
- it counts a prompt's tokens (text: 4 characters a token; an image: one token per 28x28 pixels
  after scaling it down to the processor's `max_pixels`, as Qwen2.5-VL) and answers 400 past
  `max_model_len`; a reply longer than what is left, or than `max_completion_tokens`, is cut off
  with `finish_reason: "length"`;
- greedy decoding ignores the seed: a request samples only with a temperature above 0 and top_k
  and top_p that override the model's generation_config (Qwen2.5-VL's: top_k 1, top_p 0.001);
  a sampled plan is drawn from its seed.

It answers with schema-valid JSON derived from the request, counts what it answered, and injects
latency, 5xx, timeouts, malformed JSON and cut-off replies (`finish_reason: "length"`) at
configured rates. Faults are decided from the request body and how often that body was seen, so
two servers with the same settings fail the same requests the same way.

    python tests/support/standin_server.py --port 0 --latency 0.1    # prints "listening on URL"

It imports the standard library, Pillow and jsonschema only (all in the package's environment),
so that it also runs as a script in its own process (`bench/_standin.py` starts it so).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import math
import os
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
from PIL import Image

MODEL = "standin/vl-model"
COLOURS = ("black", "white", "grey", "red", "pink", "orange", "yellow", "green", "blue", "purple")
PIXELS_PER_TOKEN = 28 * 28  # Qwen2.5-VL: one token per 28x28 pixels
PROCESSOR_MAX_PIXELS = 16384 * 28 * 28  # Qwen2.5-VL's processor without --mm-processor-kwargs
MIN_IMAGE_TOKENS = 4  # its min_pixels, 56x56
CHARS_PER_TOKEN = 4


@dataclass
class Settings:
    model: str = MODEL
    latency_s: float = 0.0
    p_5xx: float = 0.0
    p_timeout: float = 0.0
    p_malformed: float = 0.0
    p_length: float = 0.0  # replies cut off (finish_reason length), as a runaway grammar ends
    hang_s: float = 2.0
    seed: int = 0
    fail_after: int | None = None  # answers given before the server dies (drops every request)
    api_key: str | None = None  # required on /v1 as `Authorization: Bearer <key>` when set
    max_model_len: int = 8192
    max_pixels: int = PROCESSOR_MAX_PIXELS  # an image is scaled down to this before counting
    default_top_k: int = 1  # the model's generation_config, used where a request sets none
    default_top_p: float = 0.001


@dataclass
class Tally:
    requests: int = 0
    rejected: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # body hash -> 200 replies
    seen: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0
    too_long: int = 0  # 400s for a prompt past max_model_len (counted in `rejected` too)
    finish_reasons: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0  # most requests being answered at once
    images: set[str] = field(default_factory=set)  # sha256 of every image's bytes received
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # (w, h) as decoded
    sampling: list[dict[str, Any]] = field(default_factory=list)  # each request's sampling
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "rejected": self.rejected,
                "unauthorized": self.unauthorized,
                "too_long": self.too_long,
                "faults": dict(self.faults),
                "finish_reasons": dict(self.finish_reasons),
                "answered": sum(self.answered.values()),
                "answered_twice": sum(1 for n in self.answered.values() if n > 1),
                "peak_in_flight": self.peak_in_flight,
            }


SAMPLING = ("temperature", "top_p", "top_k", "seed", "max_completion_tokens", "max_tokens")
REQUIRED = {
    "extraction": {"visual_description", "attributes"},
    "intervention_plan": {"interventions"},
    "completed_negative": {"text", "visual_description"},
}


def _decoded_size(url: str) -> tuple[int, int] | str:
    """(width, height) of a data URI's image once decoded as vLLM decodes it, or why not."""
    match = re.fullmatch(r"data:image/[\w.+-]+;base64,(.+)", url, re.S)
    if not match:
        return "an image data URI must be data:image/<type>;base64,<data>"
    try:
        data = base64.b64decode(match.group(1), validate=True)
    except (ValueError, binascii.Error):
        return "the image data URI is not valid base64"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"the image could not be decoded: {exc}"


def _checked_sampling(body: dict[str, Any]) -> str | None:
    for name in ("max_completion_tokens", "max_tokens", "seed", "top_k"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{name} must be an integer"
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None and body[name] < 1:
            return f"{name} must be at least 1"
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or temperature < 0:
        return "temperature must be a number, at least 0"
    return None


def inspect(body: Any, settings: Settings) -> tuple[str | None, list[tuple[int, int]]]:
    """Why a chat completion request is invalid (or None), and the sizes of its images."""
    if not isinstance(body, dict):
        return "the body is not a JSON object", []
    if body.get("model") != settings.model:
        return f"model {body.get('model')!r} is not served (serving {settings.model!r})", []
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list", []
    sizes: list[tuple[int, int]] = []
    for message in messages:
        if message.get("role") not in ("system", "user", "assistant"):
            return f"unknown role {message.get('role')!r}", []
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return "content must be a string or a list of parts", []
        for part in content:
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                continue
            if part.get("type") != "image_url":
                return f"unknown content part {part.get('type')!r}", []
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith(("http://", "https://")):
                continue  # vLLM would fetch it; this server does not (nor count its tokens)
            if not url.startswith("data:"):
                return f"image_url must be a data URI or an http(s) URL, not {url[:40]!r}", []
            size = _decoded_size(url)
            if isinstance(size, str):
                return size, []
            sizes.append(size)
    problem = _checked_sampling(body)
    if problem:
        return problem, []
    if (body.get("response_format") or {}).get("type") != "json_schema":
        return "response_format must be {type: json_schema, json_schema: {name, schema}}", []
    spec = body["response_format"].get("json_schema") or {}
    name, schema = spec.get("name"), spec.get("schema")
    if name not in REQUIRED:
        return f"unknown response schema {name!r}", []
    if not isinstance(schema, dict):
        return "json_schema.schema must be a JSON schema object", []
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"the {name} schema does not compile: {exc.message}", []
    if not REQUIRED[name] <= set(schema.get("properties", {})):
        return f"the {name} schema lacks {sorted(REQUIRED[name])}", []
    return None, sizes


def validate(body: Any, settings: Settings) -> str | None:
    """Why a chat completion request is invalid, or None."""
    return inspect(body, settings)[0]


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def image_tokens(width: int, height: int, max_pixels: int) -> int:
    """An image's tokens: one per 28x28 pixels once it is scaled down to `max_pixels`."""
    return max(MIN_IMAGE_TOKENS, math.ceil(min(width * height, max_pixels) / PIXELS_PER_TOKEN))


def prompt_tokens(body: dict[str, Any], sizes: list[tuple[int, int]], settings: Settings) -> int:
    """The prompt's tokens: its texts' and its images'."""
    texts = 0
    for message in body["messages"]:
        content = message["content"]
        parts = [{"text": content}] if isinstance(content, str) else content
        texts += sum(text_tokens(part.get("text", "")) for part in parts)
    return texts + sum(image_tokens(w, h, settings.max_pixels) for w, h in sizes)


def sampler(body: dict[str, Any], settings: Settings) -> random.Random | None:
    """The request's random draw where it samples, None where decoding is greedy (a
    temperature of 0, or the model's top_k 1 / top_p 0.001 not overridden): then the seed
    changes nothing."""
    temperature = body.get("temperature", 1.0)
    top_k = body.get("top_k", settings.default_top_k)
    top_p = body.get("top_p", settings.default_top_p)
    if temperature == 0 or top_k == 1 or top_p < 0.01:
        return None
    seed = body.get("seed")
    return random.Random(seed) if seed is not None else random.Random()


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


def _contrast(name: str, value: str, draw: random.Random | None) -> str:
    """A value other than `value`: greedy, `value` reversed; sampled, a colour other than it
    (for a colour) or the reversed value and a number, drawn by `draw`."""
    reversed_value = value[::-1] if value[::-1] != value else f"{value} plus"
    if draw is None:
        return reversed_value
    if name == "colour":
        return draw.choice([c for c in COLOURS if c != value])
    return f"{reversed_value} {draw.randrange(1, 1000)}"


def plan_answer(body: dict[str, Any], draw: random.Random | None = None) -> dict[str, Any]:
    """Template 2: change a key attribute of the asked modality (greedy: the first, to its value
    reversed; sampled: one drawn, to a value drawn)."""
    text = _user_text(body)
    modality = re.search(r"in the (text|image) modality", text)
    wanted = modality.group(1) if modality else "text"
    keys = [
        json.loads(line)
        for line in text.splitlines()
        if line.startswith('{"modality"') and '"is_key": true' in line
    ]
    of_modality = [k for k in keys if k["modality"] == wanted] or keys
    if not of_modality:
        return {
            "interventions": [
                {"modality": wanted, "name": "none", "from_value": "x", "to_value": "y"}
            ]
        }
    chosen = of_modality[0] if draw is None else draw.choice(of_modality)
    value = chosen["value"]
    new = _contrast(chosen["name"], value, draw)
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


def answer(body: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """A schema-valid answer derived from the request, for the schema it asks for."""
    name = body["response_format"]["json_schema"].get("name")
    if name == "intervention_plan":
        return plan_answer(body, sampler(body, settings or Settings()))
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

        def _authorized(self) -> bool:
            """As vLLM with an API key: every /v1 route needs `Authorization: Bearer <key>`;
            otherwise a 401 is sent and False returned."""
            if settings.api_key is None or not self.path.startswith("/v1"):
                return True
            if self.headers.get("Authorization") == f"Bearer {settings.api_key}":
                return True
            with tally.lock:
                tally.unauthorized += 1
            self._send(401, {"error": "Unauthorized"})
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                card = {
                    "id": settings.model,
                    "object": "model",
                    "owned_by": "vllm",
                    "max_model_len": settings.max_model_len,
                }
                self._send(200, {"object": "list", "data": [card]})
            elif self.path == "/stats":
                self._send(200, tally.snapshot())
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _reject(self, message: str) -> None:
            self._send(400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self._authorized():
                return
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            problem, sizes = inspect(body, settings)
            tokens = 0 if problem else prompt_tokens(body, sizes, settings)
            too_long = problem is None and tokens > settings.max_model_len
            if too_long:
                problem = (
                    f"The decoder prompt (length {tokens}) is longer than the maximum model "
                    f"length of {settings.max_model_len}. Make sure that `max_model_len` is no "
                    "smaller than the number of text tokens plus multimodal tokens. For image "
                    "inputs, the number of image tokens depends on the number of images, and "
                    "possibly their aspect ratios as well."
                )
            key = hashlib.sha256(raw).hexdigest()
            received = _image_digests(body) if problem is None else set()
            with tally.lock:
                tally.images |= received
                tally.requests += 1
                tally.seen[key] += 1
                nth = tally.seen[key]
                if problem:
                    tally.rejected += 1
                    tally.too_long += too_long
                else:
                    tally.image_sizes += sizes
                    tally.sampling.append({k: body[k] for k in SAMPLING if k in body})
            if problem:
                self._reject(problem)
                return
            with tally.lock:
                tally.in_flight += 1
                tally.peak_in_flight = max(tally.peak_in_flight, tally.in_flight)
            try:
                self._answer(body, tokens, key, nth)
            finally:
                with tally.lock:
                    tally.in_flight -= 1

        def _answer(self, body: Any, tokens: int, key: str, nth: int) -> None:
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
            fault, edge = None, 0.0
            for name in ("5xx", "timeout", "malformed", "length"):
                edge += getattr(settings, f"p_{name}")
                if draw < edge:
                    fault = name
                    break
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
            content, finish = json.dumps(answer(body, settings)), "stop"
            if fault == "malformed":
                content = content[: len(content) // 2]
            elif fault == "length":
                content, finish = content[: len(content) // 2] + " " * 8, "length"
            room = settings.max_model_len - tokens
            asked = body.get("max_completion_tokens", body.get("max_tokens"))
            limit = room if asked is None else min(room, asked)
            if text_tokens(content) > limit:
                content, finish = content[: limit * CHARS_PER_TOKEN], "length"
            with tally.lock:
                tally.answered[key] += 1
                tally.finish_reasons[finish] += 1
            completion = text_tokens(content)
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
                            "finish_reason": finish,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": tokens,
                        "completion_tokens": completion,
                        "total_tokens": tokens + completion,
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
    parser.add_argument("--p-length", type=float, default=0.0)
    parser.add_argument("--max-model-len", type=int, default=Settings.max_model_len)
    parser.add_argument(
        "--api-key-env", help="require the key held by this environment variable, as vLLM does"
    )
    args = parser.parse_args()
    faults = ("5xx", "timeout", "malformed", "length")
    rates = {f"p_{fault}": getattr(args, f"p_{fault}") for fault in faults}
    key = os.environ[args.api_key_env] if args.api_key_env else None
    settings = Settings(
        model=args.model,
        latency_s=args.latency,
        max_model_len=args.max_model_len,
        api_key=key,
        **rates,
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(settings, Tally()))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
