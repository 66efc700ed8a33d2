"""The web application of ``deam-mamba serve``: the page at ``/``, ``POST /api/predict``, ``GET /api/health``.

One :class:`~deam_mamba.inference.predictor.Predictor` (loaded once) answers every request; predictions run
one at a time on a single worker thread, so torch never competes with itself for the cores and requests queue
instead of failing. An upload is streamed into a file of its own in the upload folder, predicted and deleted
in a ``finally`` before the answer leaves (Starlette's multipart parser holds the body in memory, or above
1 MB in an unnamed temporary file the system frees when it is closed, also before the answer).

Bad uploads get a 4xx whose JSON ``detail`` says what is wrong and what to do: 400 no file or an empty file,
413 larger than ``max_upload_bytes`` (refused from its Content-Length before reading, or as soon as a body
without one passes the limit), 415 not decodable as audio (the message of the product's
:class:`~deam_mamba.core.errors.AudioDecodeError`, naming the upload, not the temporary file).

No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations, and those name
classes imported inside :func:`create_app` (the web stack is imported lazily, only for the serve command).
"""
import asyncio
import logging
import re
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from deam_mamba.core.errors import AudioDecodeError, DeamError
from deam_mamba.core.io import to_json
from deam_mamba.core.scales import DYNAMIC
from deam_mamba.data.audio import AUDIO_EXTENSIONS
from deam_mamba.inference.predictor import CURVE_HZ, QUADRANT_SCALE, Predictor
from deam_mamba.runs.run import read_run_config

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
MULTIPART_SLACK_BYTES = 64 * 1024  # boundaries and part headers around the file in a multipart body
COPY_CHUNK_BYTES = 1024 * 1024
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


class UploadTooLarge(DeamError):
    """A request body passed the server's upload limit."""


def too_large_message(limit_bytes: int) -> str:
    """The one wording of the upload limit (API detail and page)."""
    return (f"the upload is larger than this server's limit of {limit_bytes / 1024 ** 2:g} MB; "
            "send a shorter or compressed file (mp3/ogg), or restart `deam-mamba serve` with a larger --max-upload-mb")


def value_range(predictor: Predictor) -> tuple[str, float, float]:
    """``(scale name, lo, hi)`` of the song values and curves the predictor returns (by run mode)."""
    if predictor.mode == "quadrant":
        return QUADRANT_SCALE, 0.0, 1.0
    if predictor.mode == "dynamic":
        return DYNAMIC.name, DYNAMIC.lo, DYNAMIC.hi
    return predictor.scale.name, predictor.scale.lo, predictor.scale.hi


def model_info(predictor: Predictor, which: str, max_upload_bytes: int) -> dict[str, Any]:
    """What ``GET /api/health`` answers: the run, its mode, scales and chunking, and the upload limit."""
    scale, lo, hi = value_range(predictor)
    model_name = None
    if predictor.run_dir:
        try:
            model_name = read_run_config(predictor.run_dir).model.name
        except DeamError:  # a predictor built in memory (tests) has no config to read
            model_name = None
    return {
        "status": "ok",
        "run_dir": predictor.run_dir,
        "which": which,
        "model": model_name,
        "mode": predictor.mode,
        "pooling": predictor.pooling,
        "song_scale": scale,
        "curve_scale": scale,
        "value_range": [lo, hi],
        "midpoint": (lo + hi) / 2.0,
        "curve_hz": CURVE_HZ,
        "chunk_seconds": predictor.chunk_seconds,
        "hop_seconds": predictor.hop_seconds,
        "sample_rate": predictor.sample_rate,
        "max_upload_bytes": int(max_upload_bytes),
        "audio_extensions": list(AUDIO_EXTENSIONS),
    }


def upload_name(filename: str | None) -> str:
    """The name shown for an upload: its base name only (a browser may send a path), or ``upload``."""
    name = Path(str(filename or "").replace("\\", "/")).name.strip()
    return name or "upload"


def upload_suffix(name: str) -> str:
    """A safe suffix for the temporary copy (the decoder picks its reader by it); ``.bin`` if none fits."""
    suffix = Path(name).suffix.lower()
    return suffix if _SAFE_SUFFIX.match(suffix) else ".bin"


class UploadLimit:
    """ASGI middleware: a body to ``paths`` over ``limit`` bytes gets a 413 -- from its Content-Length before
    anything is read, or while it is read (a chunked body) by raising ``HTTPException(413)`` from ``receive``,
    which FastAPI passes on while parsing a form."""

    def __init__(self, app: Any, limit: int, paths: tuple[str, ...], message: str):
        self.app, self.limit, self.paths, self.message = app, int(limit), paths, message

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException  # lazy: only the serve command loads the web stack
        from fastapi.responses import JSONResponse

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited_receive, send)


def create_app(predictor: Predictor, max_upload_bytes: int = 100 * 1024 ** 2, upload_dir: str | Path | None = None,
               which: str = "best") -> Any:
    """The FastAPI application serving ``predictor`` (see the module docstring for the routes and errors).

    ``upload_dir``: where uploads are written while they are predicted (default: a fresh temporary folder,
    removed when the application shuts down; a given folder is left in place, empty).
    """
    from fastapi import FastAPI, File, HTTPException, UploadFile  # lazy: only the serve command needs the web stack
    from fastapi.responses import HTMLResponse, Response

    if max_upload_bytes < 1:
        raise DeamError(f"the upload limit must be at least 1 byte, got {max_upload_bytes}")
    own_dir = upload_dir is None
    folder = Path(tempfile.mkdtemp(prefix="deam-mamba-uploads-") if own_dir else upload_dir)
    folder.mkdir(parents=True, exist_ok=True)
    info = model_info(predictor, which, max_upload_bytes)
    limit_message = too_large_message(max_upload_bytes)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deam-predict")  # one prediction at a time

    @asynccontextmanager
    async def lifespan(_app: Any):
        try:
            yield
        finally:
            worker.shutdown(wait=True, cancel_futures=True)
            if own_dir:
                shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title="deam-mamba", version="1", lifespan=lifespan,
                  description="Music emotion (valence/arousal) of an audio file, from a trained deam-mamba run. "
                              "The OpenAPI description is at /openapi.json (works offline; the /docs page loads "
                              "its scripts from a CDN).")
    app.state.upload_dir = folder
    app.add_middleware(UploadLimit, limit=max_upload_bytes + MULTIPART_SLACK_BYTES, paths=("/api/predict",),
                       message=limit_message)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/api/health", summary="The model being served: run, mode, scales, chunking, upload limit")
    def health() -> dict[str, Any]:
        return info

    def timed_predict(path: Path) -> tuple[Any, float]:
        """On the worker thread: the prediction of ``path`` and its seconds (without the wait in the queue)."""
        t0 = time.perf_counter()
        result = predictor.predict_file(path)
        return result, time.perf_counter() - t0

    bad = {"description": "JSON {\"detail\": reason}"}

    @app.post("/api/predict", summary="Valence/arousal of one audio file (multipart field 'file')",
              responses={200: {"description": "the song's prediction: values, scale, quadrant, 2 Hz curves"},
                         400: bad, 413: bad, 415: bad, 422: bad})
    async def predict(file: UploadFile | None = File(None, description="an audio file (mp3, wav, flac, ogg, ...)")
                      ) -> Response:
        if file is None:
            raise HTTPException(400, "no file in the upload: send multipart/form-data with the audio in a field "
                                     "named 'file'")
        name = upload_name(file.filename)
        path = folder / f"{uuid.uuid4().hex}{upload_suffix(name)}"
        try:
            size = 0
            with open(path, "wb") as out:
                while chunk := await file.read(COPY_CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise HTTPException(413, limit_message)
                    out.write(chunk)
            if size == 0:
                raise HTTPException(400, f"{name} is empty (0 bytes): choose an audio file")
            queued = time.perf_counter()
            try:
                result, predict_s = await asyncio.get_running_loop().run_in_executor(worker, timed_predict, path)
            except DeamError as exc:  # the product's one-line message, naming the upload instead of its copy
                code = 415 if isinstance(exc, AudioDecodeError) else 422
                raise HTTPException(code, str(exc).replace(str(path), name)) from None
            except Exception as exc:  # a bug, not the upload's fault: logged in full, the server keeps serving
                log.exception("prediction of %s failed", name)
                raise HTTPException(500, f"internal error while predicting {name}: {type(exc).__name__}: {exc}"
                                    ) from None
            queue_s = time.perf_counter() - queued - predict_s
        finally:
            path.unlink(missing_ok=True)
            await file.close()
        doc = {**result.to_dict(), "source": name, "mode": predictor.mode, "curve_hz": CURVE_HZ,
               "size_bytes": size, "predict_s": round(predict_s, 4), "queue_s": round(max(queue_s, 0.0), 4)}
        return Response(to_json(doc), media_type="application/json")

    return app
