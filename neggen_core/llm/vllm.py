"""The vLLM backend: a vLLM server's OpenAI-compatible Chat Completions API, over HTTP.

vLLM is an external service (`vllm serve <model>`), never a dependency of this package. Images
go as `image_url` parts holding the bytes the pipeline read under `neggen_core.images`' rules
(base64 data URIs, never a URL for the server to fetch); replies are
constrained with `response_format` = the JSON schema of `Extraction` and validated back through
it. Requests run concurrently (bounded), each with a timeout; timeouts, connection errors, 429
and 5xx are retried with exponential backoff and jitter, nothing else is. An invalid reply gets
one repair request; if that is invalid too the item is recorded `invalid` with the reason. A
request that exhausts its retries is not an answer: once every request of the batch has
settled, the batch fails with `ServerUnavailable` (nothing of it is written; a rerun asks only
what was not answered). Every reply is cached (`cache.py`) before it is used, and identical
requests in flight at once are sent once, so no request is ever paid for twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from neggen_core.config import VllmConfig
from neggen_core.errors import BackendError, ServerUnavailable
from neggen_core.images import ImagePolicy, ImageRefused
from neggen_core.llm.cache import ResponseCache, request_key
from neggen_core.llm.models import Extraction, ExtractionResult, ItemInput
from neggen_core.llm.prompts import DESCRIBE_EXTRACT, load_template
from neggen_core.redaction import redact

RETRY_STATUSES = {429, 500, 502, 503, 504}
REPAIR = (
    "Your reply was not valid JSON for the required schema ({error}). "
    "Reply again with only the corrected JSON object."
)


class TransientError(Exception):
    """A failure worth retrying: timeout, connection error, 429 or 5xx."""


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
class Session:
    """One run's client, its concurrency gate, and the requests in flight by cache key."""

    client: aiohttp.ClientSession
    gate: asyncio.Semaphore
    in_flight: dict[str, asyncio.Task[str]] = field(default_factory=dict)


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
        self.counters = {
            "requests_sent": 0,
            "cache_hits": 0,
            "shared_in_flight": 0,
            "retries": 0,
            "repairs": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }

    @property
    def source(self) -> str:
        return f"{self.name}/{self.model}"

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)

    def sampling(self) -> dict[str, Any]:
        return {
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "seed": self.config.seed,
        }

    def check_health(self) -> None:
        """The server answers and serves the model; otherwise a clear error saying how to
        start one."""
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
        if status != 200:
            raise BackendError(f"{shown} answered HTTP {status}; {how}")
        served = [m.get("id") for m in (listing or {}).get("data", [])]
        if self.model not in served:
            raise BackendError(
                f"{shown} does not serve {self.model!r} (it serves {served}); "
                f"set llm.vllm.model or start the server with `vllm serve {self.model}`"
            )

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

    async def _one(self, session: Session, item: ItemInput) -> ExtractionResult:
        image, problem = None, None
        if item.image_uri:
            try:
                image = await asyncio.to_thread(self.images.read_checked, item.image_uri)
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
        seed: int | None = None,
    ) -> Answer:
        """The model's answer as `output`, with one repair request when the first reply does
        not validate; a `ReplyError` with the reason when there is none. `ServerUnavailable`
        (no reply after every retry) passes through: it is not an answer."""
        content = await self._reply(session, messages, output, prompt_version, seed)
        try:
            return _validated(output, content)
        except ValueError as first:
            self.counters["repairs"] += 1
            repair = [
                *messages,
                {"role": "assistant", "content": content},
                {"role": "user", "content": REPAIR.format(error=_short(first))},
            ]
        content = await self._reply(session, repair, output, prompt_version, seed)
        try:
            return _validated(output, content)
        except ValueError as second:
            raise ReplyError(f"invalid reply after one repair: {_short(second)}") from second

    async def _reply(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        output: type[Answer],
        prompt_version: str,
        seed: int | None,
    ) -> str:
        """`_complete`, with a refused request made a `ReplyError`; `ServerUnavailable`
        passes through."""
        try:
            return await self._complete(session, messages, output, prompt_version, seed)
        except ServerUnavailable:
            raise
        except BackendError as exc:
            raise ReplyError(str(exc)) from exc

    async def _complete(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        output: type[BaseModel],
        prompt_version: str,
        seed: int | None,
    ) -> str:
        """The reply's content for these messages: from the cache, from an identical request
        already in flight, or from the server."""
        sampling = self.sampling() | ({} if seed is None else {"seed": seed})
        key = request_key(self.model, prompt_version, messages, sampling)
        cached = self.cache.get(key)
        if cached is not None:
            self.counters["cache_hits"] += 1
            return str(cached["content"])
        pending = session.in_flight.get(key)
        if pending is not None:
            self.counters["shared_in_flight"] += 1
            return await asyncio.shield(pending)
        body = {
            "model": self.model,
            "messages": messages,
            "response_format": response_format(output),
            **sampling,
        }
        task = asyncio.ensure_future(self._fetch(session, body, key))
        session.in_flight[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                session.in_flight.pop(key, None)

    async def _fetch(self, session: Session, body: dict[str, Any], key: str) -> str:
        reply = await self._post(session, body)
        usage = reply.get("usage") or {}
        self.counters["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.counters["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        try:
            content = str(reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"reply without choices[0].message.content: {reply!r:.200}") from exc
        self.cache.put(key, {"content": content, "usage": usage})
        return content

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
