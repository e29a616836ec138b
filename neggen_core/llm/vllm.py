"""The vLLM backend: a vLLM server's OpenAI-compatible Chat Completions API, over HTTP.

vLLM is an external service (`vllm serve <model>`), never a dependency of this package. Images
go as `image_url` parts holding the bytes the pipeline read under `neggen_core.images`' rules
(base64 data URIs, never a URL for the server to fetch), downscaled first to
`llm.vllm.max_pixels`, so that an image's tokens fit the model length; replies are
constrained with `response_format` = the JSON schema of `Extraction` and validated back through
it. Requests run concurrently (bounded), each with a timeout; timeouts, connection errors, 429
and 5xx are retried with exponential backoff and jitter, nothing else is. A reply cut off at its
token limit (`finish_reason: length`) is asked once more with twice the limit (within the
model length), never repaired; an invalid reply gets one repair request; a prompt longer than
the model length (HTTP 400) is not retried. Each of these ends, if unanswered, in the item
recorded `invalid` with the reason. A request that exhausts its retries is not an answer: once
every request of the batch has settled, the batch fails with `ServerUnavailable` (nothing of it
is written; a rerun asks only what was not answered); a refused API key fails it too. Every reply
is cached (`cache.py`) before it is used, and identical requests in flight at once are sent
once, so no request is ever paid for twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from neggen_core.config import VllmConfig
from neggen_core.errors import BackendError, ServerUnavailable
from neggen_core.images import ImagePolicy, ImageRefused, within_pixels
from neggen_core.llm.cache import ResponseCache, request_key
from neggen_core.llm.models import Extraction, ExtractionResult, ItemInput
from neggen_core.llm.prompts import DESCRIBE_EXTRACT, load_template
from neggen_core.redaction import redact

RETRY_STATUSES = {429, 500, 502, 503, 504}
KEY_STATUSES = {401, 403}
# vLLM's 400s for a prompt (text and image tokens) past --max-model-len, across versions
TOO_LONG = re.compile(
    r"longer than the maximum model length|maximum context length|max_completion_tokens' is too",
    re.IGNORECASE,
)
REPAIR = (
    "Your reply was not valid JSON for the required schema ({error}). "
    "Reply again with only the corrected JSON object."
)


class TransientError(Exception):
    """A failure worth retrying: timeout, connection error, 429 or 5xx."""


class KeyRefused(BackendError):
    """The server refused the API key (HTTP 401 or 403): no item's answer, the run's failure."""


def image_part(data: bytes, mime: str) -> dict[str, Any]:
    """An `image_url` content part holding the image's bytes as a base64 data URI (never a URL
    for the server to fetch)."""
    encoded = base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}


def extraction_messages(
    item: ItemInput, image: tuple[bytes, str] | None = None
) -> list[dict[str, Any]]:
    """Template 1's chat messages for one item, with its image (bytes, MIME type) when read."""
    template = load_template(DESCRIBE_EXTRACT)
    note = "The item's image is attached." if image else "The item has no image."
    content: list[dict[str, Any]] = [
        {"type": "text", "text": template.render(item_text=item.text(), image_note=note)}
    ]
    if image:
        content.append(image_part(*image))
    return [{"role": "user", "content": content}]


@cache
def response_format(output: type[BaseModel] = Extraction) -> dict[str, Any]:
    """`response_format` constraining a reply to `output`'s JSON schema."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", output.__name__).lower()
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": output.model_json_schema()},
    }


class ReplyError(Exception):
    """No valid answer for one request: the reason, kept on the row."""


@dataclass(frozen=True)
class Sampling:
    """How a reply is sampled: sent with the request, and part of its cache key."""

    temperature: float
    max_completion_tokens: int
    seed: int

    def body(self) -> dict[str, Any]:
        """The request's sampling fields. Greedy decoding (temperature 0) ignores a seed, so none
        is sent and identical greedy requests share one cache key; sampling also sends top_p 1
        and top_k -1, since a served model's generation_config (Qwen2.5-VL's: top_k 1, top_p
        0.001) would otherwise keep it greedy."""
        if self.temperature == 0:
            return {"temperature": 0.0, "max_completion_tokens": self.max_completion_tokens}
        return {
            "temperature": self.temperature,
            "top_p": 1.0,
            "top_k": -1,
            "seed": self.seed,
            "max_completion_tokens": self.max_completion_tokens,
        }


@dataclass(frozen=True)
class Reply:
    """A reply's content, why it stopped (`stop`, `length`; None when not said) and the prompt's
    tokens as the server counted them (None when not said)."""

    content: str
    finish_reason: str | None
    prompt_tokens: int | None


@dataclass(frozen=True)
class Session:
    """One run's client, its concurrency gate, and the requests in flight by cache key."""

    client: aiohttp.ClientSession
    gate: asyncio.Semaphore
    in_flight: dict[str, asyncio.Task[Reply]] = field(default_factory=dict)


Settled = TypeVar("Settled")


def _unwrapped(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def all_settled(awaitables: Sequence[Awaitable[Settled]]) -> list[Settled]:
    """Every result once all have finished; then the first exception, if any (so that an
    error does not abandon requests still in flight, whose answers are cached)."""
    return _unwrapped(await asyncio.gather(*awaitables, return_exceptions=True))


async def settle(base_url: str, awaitables: Sequence[Awaitable[Settled]]) -> list[Settled]:
    """A batch's results, once all have finished. Items the server gave no reply for fail the
    whole batch, after the others have settled: every answer received is cached first."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    lost = [r for r in results if isinstance(r, ServerUnavailable)]
    if lost:
        raise ServerUnavailable(
            f"the vLLM server at {redact(base_url)} gave no reply for {len(lost)} of "
            f"{len(results)} "
            f"items of this batch ({lost[0]}); nothing of the batch was written. When the "
            "server answers again, rerun the same command: the answers received are cached and "
            "only the rest are asked"
        ) from lost[0]
    return _unwrapped(results)


Answer = TypeVar("Answer", bound=BaseModel)


def _validated(output: type[Answer], content: str) -> Answer:
    try:
        return output.model_validate_json(content)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"] if exc.errors() else str(exc)) from exc


class VllmBackend:
    """Template 1 answered by a model served by vLLM."""

    name = "vllm"
    marks_keys = True

    def __init__(self, config: VllmConfig, cache: ResponseCache, images: ImagePolicy) -> None:
        self.config = config
        self.images = images
        self.model = config.model
        self.cache = cache
        self.prompt_version = load_template(DESCRIBE_EXTRACT).version
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._random = random.Random()
        self.sampling = Sampling(config.temperature, config.max_completion_tokens, config.seed)
        self.max_model_len: int | None = None  # as the server says, once checked
        self.counters = {
            "requests_sent": 0,
            "cache_hits": 0,
            "shared_in_flight": 0,
            "retries": 0,
            "repairs": 0,
            "length_retries": 0,
            "prompt_too_long": 0,
            "images_downscaled": 0,
            "finish_reason_stop": 0,
            "finish_reason_length": 0,
            "finish_reason_other": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }

    @property
    def source(self) -> str:
        return f"{self.name}/{self.model}"

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)

    def negatives_sampling(self, seed: int) -> Sampling:
        """Templates 2 and 3's sampling for one negative, seeded by its own `seed`."""
        config = self.config
        return Sampling(config.negatives_temperature, config.max_completion_tokens, seed)

    def key_advice(self) -> str:
        """What to do about a refused API key, naming the variable it is read from."""
        name = self.config.api_key_env
        if name is None:
            return (
                "no key was sent (llm.vllm.api_key_env is null): set it to the environment "
                "variable holding the key the server was started with"
            )
        if "Authorization" not in self._headers:
            return (
                f"no key was sent: the environment variable {name} (llm.vllm.api_key_env) is "
                "not set; set it to the key the server was started with (--api-key or VLLM_API_KEY)"
            )
        return (
            f"the key in the environment variable {name} (llm.vllm.api_key_env) is not the "
            "server's: set it to the key the server was started with (--api-key or VLLM_API_KEY)"
        )

    def check_health(self) -> None:
        """The server answers, accepts the key and serves the model (whose `max_model_len` it
        reports is kept); otherwise a clear error saying what to do."""
        url = f"{self.config.base_url.rstrip('/')}/models"
        shown = redact(url)
        how = (
            f"start one with `vllm serve {self.model}` or `docker compose --profile gpu up vllm`, "
            "or set llm.vllm.base_url"
        )

        async def models() -> tuple[int, Any]:
            timeout = aiohttp.ClientTimeout(total=10)
            async with (
                aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session,
                session.get(url) as reply,
            ):
                return reply.status, await reply.json() if reply.status == 200 else None

        try:
            status, listing = asyncio.run(models())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            detail = redact(str(exc) or type(exc).__name__)
            raise BackendError(f"no vLLM server answers at {shown} ({detail}); {how}") from exc
        if status in KEY_STATUSES:
            raise BackendError(f"{shown} refused the API key (HTTP {status}): {self.key_advice()}")
        if status != 200:
            raise BackendError(f"{shown} answered HTTP {status}; {how}")
        cards = {m.get("id"): m for m in (listing or {}).get("data", [])}
        if self.model not in cards:
            raise BackendError(
                f"{shown} does not serve {self.model!r} (it serves {list(cards)}); "
                f"set llm.vllm.model or start the server with `vllm serve {self.model}`"
            )
        length = cards[self.model].get("max_model_len")
        self.max_model_len = length if isinstance(length, int) else None

    def extract(self, items: Sequence[ItemInput]) -> list[ExtractionResult]:
        return self.run(
            lambda session: settle(self.config.base_url, [self._one(session, i) for i in items])
        )

    def run(self, work: Callable[[Session], Awaitable[Sequence[Any]]]) -> list[Any]:
        """Run async work against the server with one bounded client session."""

        async def main() -> list[Any]:
            connector = aiohttp.TCPConnector(limit=self.config.concurrency)
            async with aiohttp.ClientSession(headers=self._headers, connector=connector) as client:
                session = Session(client, asyncio.Semaphore(self.config.concurrency))
                return list(await work(session))

        return asyncio.run(main())

    def _image(self, uri: str) -> tuple[tuple[bytes, str], bool]:
        """The image's bytes and MIME type as sent (within `max_pixels`), and whether they
        were downscaled to be."""
        data, mime = self.images.read_checked(uri)
        sent = within_pixels(data, mime, self.config.max_pixels)
        return sent, sent[0] is not data

    async def _one(self, session: Session, item: ItemInput) -> ExtractionResult:
        image, problem = None, None
        if item.image_uri:
            try:
                image, downscaled = await asyncio.to_thread(self._image, item.image_uri)
                self.counters["images_downscaled"] += downscaled
            except ImageRefused as exc:
                problem = str(exc)
        result = ExtractionResult(item_idx=item.item_idx, status="ok", image_problem=problem)
        try:
            extraction = await self.ask(
                session, extraction_messages(item, image), Extraction, self.prompt_version
            )
        except ReplyError as exc:
            return result.model_copy(update={"status": "invalid", "reason": str(exc)})
        return result.model_copy(update={"extraction": extraction})

    async def ask(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        output: type[Answer],
        prompt_version: str,
        sampling: Sampling | None = None,
    ) -> Answer:
        """The model's answer as `output` (sampled by `sampling`, template 1's by default), with
        one repair request when a whole reply does not validate; a `ReplyError` with the reason
        when there is none. `ServerUnavailable` (no reply after every retry) and `KeyRefused`
        pass through: they are not answers."""
        sampling = sampling or self.sampling
        content = (await self._whole(session, messages, output, prompt_version, sampling)).content
        try:
            return _validated(output, content)
        except ValueError as first:
            self.counters["repairs"] += 1
            repair = [
                *messages,
                {"role": "assistant", "content": content},
                {"role": "user", "content": REPAIR.format(error=_short(first))},
            ]
        content = (await self._whole(session, repair, output, prompt_version, sampling)).content
        try:
            return _validated(output, content)
        except ValueError as second:
            raise ReplyError(f"invalid reply after one repair: {_short(second)}") from second

    async def _whole(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        output: type[Answer],
        prompt_version: str,
        sampling: Sampling,
    ) -> Reply:
        """A reply that was not cut off. One that stopped at its token limit (finish_reason
        `length`) is asked once more with twice the limit, within the model length; a
        `ReplyError` when that is cut off too, or when no larger limit fits."""
        reply = await self._reply(session, messages, output, prompt_version, sampling)
        if reply.finish_reason != "length":
            return reply
        limit = sampling.max_completion_tokens
        larger = 2 * limit
        if self.max_model_len is not None and reply.prompt_tokens is not None:
            larger = min(larger, self.max_model_len - reply.prompt_tokens)
        if larger <= limit:
            raise ReplyError(
                f"cut off: the reply reached its limit of {limit} tokens (finish_reason length) "
                f"and the model length ({self.max_model_len} tokens, {reply.prompt_tokens} in "
                "the prompt) leaves no room for a larger one"
            )
        self.counters["length_retries"] += 1
        larger_sampling = replace(sampling, max_completion_tokens=larger)
        again = await self._reply(session, messages, output, prompt_version, larger_sampling)
        if again.finish_reason == "length":
            raise ReplyError(
                f"cut off: the reply reached its limit (finish_reason length) at {limit} tokens "
                f"and again at {larger}"
            )
        return again

    async def _reply(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        output: type[Answer],
        prompt_version: str,
        sampling: Sampling,
    ) -> Reply:
        """`_complete`, with a refused request made a `ReplyError`; `ServerUnavailable` and
        `KeyRefused` pass through."""
        try:
            return await self._complete(session, messages, output, prompt_version, sampling)
        except (ServerUnavailable, KeyRefused):
            raise
        except BackendError as exc:
            raise ReplyError(str(exc)) from exc

    async def _complete(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        output: type[BaseModel],
        prompt_version: str,
        sampling: Sampling,
    ) -> Reply:
        """The reply for these messages: from the cache, from an identical request already in
        flight, or from the server."""
        fields = sampling.body()
        key = request_key(self.model, prompt_version, messages, fields)
        cached = self.cache.get(key)
        if cached is not None:
            self.counters["cache_hits"] += 1
            return _reply_of(cached)
        pending = session.in_flight.get(key)
        if pending is not None:
            self.counters["shared_in_flight"] += 1
            return await asyncio.shield(pending)
        body = {
            "model": self.model,
            "messages": messages,
            "response_format": response_format(output),
            **fields,
        }
        task = asyncio.ensure_future(self._fetch(session, body, key))
        session.in_flight[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                session.in_flight.pop(key, None)

    async def _fetch(self, session: Session, body: dict[str, Any], key: str) -> Reply:
        reply = await self._post(session, body)
        usage = reply.get("usage") or {}
        self.counters["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.counters["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        try:
            choice = reply["choices"][0]
            content = str(choice["message"]["content"])
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"reply without choices[0].message.content: {reply!r:.200}") from exc
        finish = choice.get("finish_reason")
        counter = f"finish_reason_{finish}"
        self.counters[counter if counter in self.counters else "finish_reason_other"] += 1
        entry = {"content": content, "usage": usage, "finish_reason": finish}
        self.cache.put(key, entry)
        return _reply_of(entry)

    async def _post(self, session: Session, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on transient failures only, exponential backoff with jitter."""
        url = f"{self.config.base_url.rstrip('/')}/chat/completions"
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        transient = (
            TransientError,
            TimeoutError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
        )
        attempt = 0
        while True:
            try:
                async with session.gate:
                    self.counters["requests_sent"] += 1
                    async with session.client.post(url, json=body, timeout=timeout) as response:
                        status, text = response.status, await response.text()
                if status in RETRY_STATUSES:
                    raise TransientError(f"HTTP {status}: {text[:200]}")
                if status in KEY_STATUSES:
                    raise KeyRefused(
                        f"{redact(url)} refused the API key (HTTP {status}): {self.key_advice()}"
                    )
                if status == 400 and TOO_LONG.search(message := _error_message(text)):
                    self.counters["prompt_too_long"] += 1
                    raise BackendError(
                        f"prompt too long: {message[:300]} (lower llm.vllm.max_pixels or the "
                        "item text, or raise the server's --max-model-len)"
                    )
                if status != 200:
                    raise BackendError(f"HTTP {status}: {text[:300]}")
                try:
                    return json.loads(text)  # type: ignore[no-any-return]
                except ValueError as exc:
                    raise TransientError(f"a reply that is not JSON: {text[:200]}") from exc
            except transient as exc:
                if attempt >= self.config.max_retries:
                    raise ServerUnavailable(
                        f"gave up after {attempt + 1} attempts: {type(exc).__name__}: "
                        + redact(str(exc))
                    ) from exc
                delay = min(self.config.backoff_max_s, self.config.backoff_s * 2**attempt)
                self.counters["retries"] += 1
                attempt += 1
                await asyncio.sleep(delay / 2 + self._random.uniform(0, delay / 2))


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]


def _reply_of(entry: dict[str, Any]) -> Reply:
    """A cache entry (or a reply just received) as a `Reply`."""
    tokens = (entry.get("usage") or {}).get("prompt_tokens")
    finish = entry.get("finish_reason")
    return Reply(
        str(entry["content"]),
        finish if isinstance(finish, str) else None,
        tokens if isinstance(tokens, int) else None,
    )


def _error_message(text: str) -> str:
    """The message of an OpenAI-style error body (`{"error": {"message"}}`, vLLM's older
    `{"message"}`), or the body itself."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    error = body.get("error") if isinstance(body, dict) else None
    found = error.get("message") if isinstance(error, dict) else error
    if found is None and isinstance(body, dict):
        found = body.get("message")
    return str(found) if found is not None else text
