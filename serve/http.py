"""The reward service's HTTP layer: the JSON API of a replica (``POST {prefix}/score``,
``GET {prefix}/health``), its body limits, item parsing and server-side paths under ``video_root``.

``JsonApi`` is mixed into ``serve.deployment.RewardDeployment``; it calls the replica's ``score`` and
``_health`` and reads its ``cfg`` and ``backend``. Every failure becomes a JSON ``{"error": ...}`` with
a status code that says whose fault it was (4xx the request's, 503/504 the service's).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from pathlib import Path

from .backends import RewardRequestError, RewardServiceError

logger = logging.getLogger("ray.serve")

ITEM_FIELDS = ("prompt", "video_b64", "path")


class JsonApi:
    """The HTTP entry point of a reward replica (Serve calls ``__call__`` with a Starlette request)."""

    async def __call__(self, request) -> object:
        """The JSON API; every failure is a JSON ``{"error": ...}`` and the replica keeps serving."""
        try:
            return await self._http(request)
        except RewardRequestError as e:
            return _json({"error": str(e)}, e.status, getattr(e, "headers", None))
        except TimeoutError as e:
            return _json({"error": str(e)}, 504)
        except RewardServiceError as e:
            return _json({"error": str(e)}, 503)
        except Exception as e:
            logger.exception("reward service: unexpected error")
            return _json({"error": f"internal error ({type(e).__name__}: {e}); the replica's log has the trace"}, 500)

    async def _http(self, request):
        # The prefix the app was actually deployed under: `serve run` and config files set it, not cfg.
        prefix = request.scope.get("root_path", "").rstrip("/")
        routes = {"/score": "POST", "/health": "GET"}
        path = _route(request.scope)
        if path not in routes:
            raise RewardRequestError(
                f"no route {request.method} {prefix}{path}; routes are POST {prefix}/score and GET {prefix}/health", 404
            )
        if request.method != routes[path]:
            e = RewardRequestError(f"{request.method} is not allowed on {prefix}{path}; use {routes[path]}", 405)
            e.headers = {"Allow": routes[path]}
            raise e
        if path == "/health":
            scores = await asyncio.wait_for(self._health(), self.cfg.request_timeout_s)
            return _json({"status": "ok", "model": self.cfg.model, "backend": self.backend.name, **scores}, 200)
        data = self._parse_json(await self._read_body(request))
        if "videos" in data:
            extra = sorted(set(data) - {"videos"})
            if extra:
                raise RewardRequestError(f"unknown field(s) {extra} next to 'videos'; give only 'videos'")
            items = data["videos"]
            if not isinstance(items, list) or not items:
                raise RewardRequestError(
                    f"'videos' must be a non-empty list of {{prompt, video_b64 | path}} objects, "
                    f"got {type(items).__name__}"
                )
            parsed = [await self._parse_item(item, f"videos[{i}]") for i, item in enumerate(items)]
        else:
            parsed = [await self._parse_item(data, "body")]
        results = await asyncio.gather(*(self.score(mp4, prompt) for mp4, prompt in parsed), return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, RewardRequestError) and "videos" in data:
                raise RewardRequestError(f"videos[{i}]: {r}", r.status)
            if isinstance(r, BaseException):
                raise r
        return _json({"results": results} if "videos" in data else results[0], 200)

    async def _read_body(self, request) -> bytes:
        limit = self.cfg.max_body_bytes
        fix = "send fewer or smaller videos, or a 'path' under the service's video_root"
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise RewardRequestError(f"Content-Length {declared!r} is not an integer", 400) from None
            if size > limit:
                raise RewardRequestError(f"body of {size} bytes exceeds max_body_bytes={limit}; {fix}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():  # the header may be absent (chunked) or wrong: count
            size += len(chunk)
            if size > limit:
                raise RewardRequestError(f"body exceeds max_body_bytes={limit} (over {size} bytes read); {fix}", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse_json(body: bytes) -> dict:
        usage = 'send {"prompt": "...", "video_b64": "<base64 mp4>"} or {"prompt": "...", "path": "..."}'
        if not body:
            raise RewardRequestError(f"empty body; {usage}", 400)
        try:
            data = json.loads(body)
        except ValueError as e:
            raise RewardRequestError(f"body is not valid JSON ({e}); {usage}", 400) from None
        if not isinstance(data, dict):
            raise RewardRequestError(f"body must be a JSON object, got {type(data).__name__}; {usage}")
        return data

    async def _parse_item(self, item: object, where: str) -> tuple[bytes, str]:
        if not isinstance(item, dict):
            raise RewardRequestError(
                f"{where} must be an object with 'prompt' and 'video_b64' or 'path', got {type(item).__name__}"
            )
        unknown = sorted(set(item) - set(ITEM_FIELDS))
        if unknown:
            raise RewardRequestError(f"{where}: unknown field(s) {unknown}; fields are {', '.join(ITEM_FIELDS)}")
        if "prompt" not in item:
            raise RewardRequestError(f"{where}: missing 'prompt' (the text the video should show)")
        prompt = item["prompt"]
        if not isinstance(prompt, str):
            raise RewardRequestError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise RewardRequestError(f"{where}: 'prompt' is empty")
        has_b64, has_path = "video_b64" in item, "path" in item
        if has_b64 == has_path:
            what = "both 'video_b64' and 'path'" if has_b64 else "no video"
            raise RewardRequestError(
                f"{where}: {what}; give exactly one of 'video_b64' (base64 of an mp4) or "
                "'path' (an mp4 under the service's video_root)"
            )
        if has_b64:
            b64 = item["video_b64"]
            if not isinstance(b64, str):
                raise RewardRequestError(f"{where}: 'video_b64' must be a base64 string, got {type(b64).__name__}")
            try:
                return base64.b64decode(b64, validate=True), prompt
            except (binascii.Error, ValueError) as e:
                raise RewardRequestError(f"{where}: 'video_b64' is not valid base64 ({e})") from None
        return await asyncio.to_thread(self._read_path, item["path"], where), prompt

    def _read_path(self, path: object, where: str) -> bytes:
        if not isinstance(path, str):
            raise RewardRequestError(f"{where}: 'path' must be a string, got {type(path).__name__}")
        if not self.cfg.video_root:
            raise RewardRequestError(
                f"{where}: server-side paths are disabled (the service was deployed without "
                "video_root); send 'video_b64' or redeploy with video_root set",
                403,
            )
        root = Path(self.cfg.video_root).resolve()
        try:
            target = (root / path).resolve()  # an absolute ``path`` replaces root; '..' and symlinks resolve here
        except (OSError, ValueError) as e:  # a NUL byte, a symlink loop
            raise RewardRequestError(f"{where}: path {path!r} cannot be resolved ({e})") from None
        if not target.is_relative_to(root):
            raise RewardRequestError(f"{where}: path {path!r} lies outside video_root {str(root)!r}", 403)
        if not target.is_file():
            raise RewardRequestError(f"{where}: no file {path!r} under video_root {str(root)!r}", 404)
        size = target.stat().st_size
        if size > self.cfg.max_body_bytes:
            raise RewardRequestError(
                f"{where}: {path!r} is {size} bytes, over max_body_bytes={self.cfg.max_body_bytes}", 413
            )
        return target.read_bytes()


def _route(scope: dict) -> str:
    """The request path below the app's route prefix (Serve puts the prefix in ``root_path``)."""
    path, root = scope.get("path", ""), scope.get("root_path", "").rstrip("/")
    if root and path.startswith(root):
        path = path[len(root) :]
    return "/" + path.strip("/")


def _json(content: dict, status: int, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status, headers=headers)
