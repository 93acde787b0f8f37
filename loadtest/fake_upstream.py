"""A fake model API for tests and load tests: the Anthropic Messages and OpenAI Chat Completions
wire formats over real HTTP under gevent, with latency, fault injection and call counters.

    python -m loadtest.fake_upstream --port 8089 --latency 0.3

Control over HTTP: GET /_stats, POST /_reset, POST /_control with a JSON object:
    {"latency": 0.3, "video_latency": 2.0,
     "faults": [{"status": 529, "times": 2, "headers": {"retry-after": "1"}},
                {"action": "reset"}, {"action": "invalid_json"}, {"action": "wrong_shape"},
                {"action": "delay", "seconds": 5}, {"action": "empty"}],
     "sticky": {"status": 500},          # applied to every call until cleared with null
     "hold": true}                       # model calls wait at a gate until {"release": true}
Queued faults are used one per call, in order; a fault with "times" repeats that many calls.
Streams ("stream": true in the body) answer in the API's own event-stream format, the text in
"stream_chunks" pieces (default 8) "stream_interval" seconds apart (default 0), e.g.
    {"stream_chunks": 20, "stream_interval": 0.05,
     "faults": [{"action": "stream_error", "after": 3},        # an error event after 3 deltas
                {"action": "stream_reset", "after": 2},        # TCP reset after 2 deltas
                {"action": "stream_stall", "after": 1, "seconds": 30},    # silence mid-stream
                {"action": "stream_pause", "after": 50}]}    # wait mid-stream until {"resume": true}
GET /_stats counts streams started, completed and aborted by the client (with the time of the
last abort), so a test can see the service close an upstream stream nobody follows.
The gate lets a test make "every caller is in flight before the upstream answers" true by
construction: hold, send, wait until the service says everyone waits (GET /_stats "held"
counts calls at the gate), then release.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import socket
import struct
import time
import uuid
from collections import Counter, deque
from typing import Any

__all__ = ["FakeUpstream", "main"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def answer_text(system: str, user: str, fingerprint: str) -> str:
    """Return a plausible answer for the request: JSON of the right shape for the JSON tasks
    (recognised by the keys their system prompts name), otherwise a prompt unique to the input."""
    if '"isSceneChange"' in system:
        return json.dumps(
            {
                "isSceneChange": True,
                "confidence": "high",
                "reasoning": f"The edit moves the scene ({fingerprint}).",
                "suggestedUpdates": {"time": "dusk"},
            }
        )
    if '"questions"' in system:
        fields = ("specificAspects", "backgroundLevel", "intendedUse")
        return json.dumps(
            {
                "questions": [
                    {
                        "id": i + 1,
                        "title": f"Question {i + 1} ({fingerprint})",
                        "description": "Why it matters.",
                        "field": field,
                        "examples": ["one", "two"],
                    }
                    for i, field in enumerate(fields)
                ]
            }
        )
    if '"suggestions"' in system:
        return (
            "```json\n"
            + json.dumps(
                {
                    "suggestions": [
                        {"text": f"Option {i + 1} ({fingerprint})", "explanation": "Adds clarity."} for i in range(8)
                    ]
                }
            )
            + "\n```"
        )
    return f"Optimized prompt [{fingerprint}]\n\n{user[:400]}\n\nBe specific, state success criteria."


class FakeUpstream:
    """The WSGI app plus its state; one instance per server process."""

    def __init__(self, latency: float = 0.0, video_latency: float | None = None) -> None:
        self.latency = latency
        self.video_latency = video_latency
        self.reset()

    def reset(self) -> None:
        # Calls begun before a reset (a gate or pause it releases, a stream still running) must
        # not count after it: each call remembers the epoch it began in.
        self.epoch = getattr(self, "epoch", 0) + 1
        self.calls: Counter[str] = Counter()
        self.connections = 0
        self._model_connections: set[int] = set()
        self.faults: deque[dict[str, Any]] = deque()
        self.sticky: dict[str, Any] | None = None
        self.seen: deque[dict[str, Any]] = deque(maxlen=2000)
        self.in_flight = 0
        self.max_in_flight = 0
        self.tokens = {"input": 0, "output": 0}
        self.held = 0
        self.paused = 0
        if getattr(self, "_pause", None) is not None:
            self._pause.set()  # nobody stays paused across a reset
        self._pause: Any = None
        self.stream_chunks = 8
        self.stream_interval = 0.0
        self.streams = {"started": 0, "completed": 0, "aborted": 0, "open": 0}
        self.last_abort: float | None = None
        self._release_gate()

    def _release_gate(self) -> None:
        gate = getattr(self, "_gate", None)
        if gate is not None:
            gate.set()  # nobody stays parked behind a gate that no test will open
        self._gate: Any = None

    # --- WSGI ------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        if path == "/_stats" and method == "GET":
            return self._json(start_response, 200, self.stats())
        if path == "/_reset" and method == "POST":
            self.reset()
            return self._json(start_response, 200, {"ok": True})
        if path == "/_control" and method == "POST":
            return self._json(start_response, 200, self.control(json.loads(raw or b"{}")))
        if method == "POST" and path in ("/v1/messages", "/v1/chat/completions"):
            return self._complete(environ, start_response, path, raw)
        return self._json(start_response, 404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

    def control(self, spec: dict[str, Any]) -> dict[str, Any]:
        if "latency" in spec:
            self.latency = float(spec["latency"])
        if "stream_chunks" in spec:
            self.stream_chunks = max(1, int(spec["stream_chunks"]))
        if "stream_interval" in spec:
            self.stream_interval = float(spec["stream_interval"])
        if "video_latency" in spec:
            self.video_latency = spec["video_latency"]
        for fault in spec.get("faults", []):
            for _ in range(int(fault.get("times", 1))):
                self.faults.append(fault)
        if "sticky" in spec:
            self.sticky = spec["sticky"]
        if spec.get("resume") and self._pause is not None:
            self._pause.set()
            self._pause = None
        if spec.get("release") or spec.get("hold") is False:
            self._release_gate()
        if spec.get("hold"):
            from gevent.event import Event

            self._release_gate()
            self._gate = Event()
        return {
            "queued": len(self.faults),
            "sticky": self.sticky,
            "latency": self.latency,
            "holding": self._gate is not None,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "total": sum(self.calls.values()),
            "connections": self.connections,
            "inFlight": self.in_flight,
            "maxInFlight": self.max_in_flight,
            "held": self.held,
            "paused": self.paused,
            "streams": dict(self.streams),
            "lastStreamAbort": self.last_abort,
            "tokens": dict(self.tokens),
            "seen": list(self.seen),
        }

    def _complete(self, environ: dict[str, Any], start_response: Any, path: str, raw: bytes) -> list[bytes]:
        environ["fake.epoch"] = epoch = self.epoch
        self.calls[path] += 1
        if environ["fake.connection"] not in self._model_connections:
            self._model_connections.add(environ["fake.connection"])
            self.connections += 1  # TCP connections that carried model calls
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer(environ, start_response, path, raw)
        finally:
            if epoch == self.epoch:
                self.in_flight -= 1

    def _answer(self, environ: dict[str, Any], start_response: Any, path: str, raw: bytes) -> list[bytes]:
        import gevent

        body = json.loads(raw)
        anthropic = path == "/v1/messages"
        system = body.get("system", "") if anthropic else body["messages"][0]["content"]
        user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        self.seen.append(
            {
                "path": path,
                "model": body.get("model"),
                "max_tokens": body.get("max_tokens"),
                "traceparent": environ.get("HTTP_TRACEPARENT"),
                "api_key": environ.get("HTTP_X_API_KEY"),
                "authorization": environ.get("HTTP_AUTHORIZATION"),
                "anthropic_version": environ.get("HTTP_ANTHROPIC_VERSION"),
                "user_sha": hashlib.sha256(user.encode()).hexdigest()[:16],
            }
        )
        gate = self._gate
        if gate is not None:
            self.held += 1
            try:
                gate.wait()
            finally:
                self.held -= 1
        fault = self.faults.popleft() if self.faults else self.sticky
        latency = self.video_latency if self.video_latency is not None and "text-to-video" in system else self.latency
        stream_fault = fault if fault and str(fault.get("action", "")).startswith("stream_") else None
        if stream_fault:
            fault = None
        if fault and fault.get("action") == "delay":
            latency = float(fault["seconds"])
        if latency:
            gevent.sleep(latency)
        if fault:
            action = fault.get("action")
            if action == "reset":
                _reset_connection(environ)
                return []
            if action == "invalid_json":
                start_response("200 OK", [("Content-Type", "application/json")])
                return [b'{"content": [ this is not json']
            if action == "wrong_shape":
                return self._json(start_response, 200, {"unexpected": True})
            if action == "empty":
                empty = _message(body, "", system, user) if anthropic else _chat(body, "", system, user)
                return self._json(start_response, 200, empty)
            if "status" in fault:
                status = int(fault["status"])
                error = {
                    "type": "error",
                    "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": f"injected {status}"},
                }
                return self._json(start_response, status, error, fault.get("headers", {}))
        fingerprint = hashlib.sha256(raw).hexdigest()[:16]
        text = answer_text(system, user, fingerprint)
        payload = _message(body, text, system, user) if anthropic else _chat(body, text, system, user)
        if body.get("stream"):
            start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
            return self._stream(environ, payload, anthropic, stream_fault)
        if environ["fake.epoch"] == self.epoch:
            self._count_tokens(payload["usage"], anthropic)
        return self._json(start_response, 200, payload)

    def _count_tokens(self, usage: dict[str, int], anthropic: bool) -> None:
        self.tokens["input"] += usage["input_tokens"] if anthropic else usage["prompt_tokens"]
        self.tokens["output"] += usage["output_tokens"] if anthropic else usage["completion_tokens"]

    def _stream(
        self, environ: dict[str, Any], payload: dict[str, Any], anthropic: bool, fault: dict[str, Any] | None
    ) -> Any:
        """Yield the answer as server-sent events in the wire format of the path."""
        import gevent

        text = payload["content"][0]["text"] if anthropic else payload["choices"][0]["message"]["content"]
        count = max(1, min(self.stream_chunks, len(text)))  # exactly stream_chunks pieces, text allowing
        bounds = [round(i * len(text) / count) for i in range(count + 1)]
        pieces = [text[bounds[i] : bounds[i + 1]] for i in range(count)]
        events = _anthropic_events(payload, pieces) if anthropic else _openai_events(payload, pieces)
        after = int(fault.get("after", 0)) if fault else -1
        epoch = environ["fake.epoch"]
        self.streams["started"] += 1
        self.streams["open"] += 1
        finished = False
        try:
            deltas = 0
            for kind, event in events:
                if kind == "delta":
                    if deltas == after:
                        action = fault["action"]  # type: ignore[index]
                        if action == "stream_error":
                            yield _error_event(anthropic)
                            finished = True
                            return
                        if action == "stream_reset":
                            _reset_connection(environ)
                            finished = True
                            return
                        if action == "stream_stall":
                            gevent.sleep(float(fault.get("seconds", 3600)))  # type: ignore[union-attr]
                        if action == "stream_pause":
                            from gevent.event import Event

                            self._pause = self._pause or Event()
                            self.paused += 1
                            try:
                                self._pause.wait()
                            finally:
                                self.paused -= 1
                    if deltas and self.stream_interval:
                        gevent.sleep(self.stream_interval)
                    deltas += 1
                yield event
            if epoch == self.epoch:
                self._count_tokens(payload["usage"], anthropic)
                self.streams["completed"] += 1
            finished = True
        finally:
            if epoch == self.epoch:
                self.streams["open"] -= 1
                if not finished:  # the client went away (the server closed this generator early)
                    self.streams["aborted"] += 1
                    self.last_abort = time.time()

    @staticmethod
    def _json(start_response: Any, status: int, data: Any, headers: dict[str, str] | None = None) -> list[bytes]:
        payload = json.dumps(data).encode()
        reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
        start_response(
            f"{status} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *(headers or {}).items()],
        )
        return [payload]


def _message(body: dict[str, Any], text: str, system: str, user: str) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _tokens(system + user),
            "output_tokens": _tokens(text) if text else 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _chat(body: dict[str, Any], text: str, system: str, user: str) -> dict[str, Any]:
    prompt, completion = _tokens(system + user), _tokens(text) if text else 0
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def _sse(name: str | None, data: Any) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def _anthropic_events(message: dict[str, Any], pieces: list[str]) -> Any:
    """The Messages API stream: start, a ping, text deltas, the stop with output usage."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield "meta", _sse("message_start", {"type": "message_start", "message": start})
    yield (
        "meta",
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    )
    yield "meta", _sse("ping", {"type": "ping"})
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        yield "delta", _sse("content_block_delta", delta)
    yield "meta", _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield "meta", _sse("message_delta", end)
    yield "meta", _sse("message_stop", {"type": "message_stop"})


def _openai_events(completion: dict[str, Any], pieces: list[str]) -> Any:
    """Chat Completions chunks, the usage chunk (stream_options.include_usage), then [DONE]."""
    base = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
    yield "meta", _sse(None, {**base, "choices": [first]})
    for piece in pieces:
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None, "logprobs": None}
        yield "delta", _sse(None, {**base, "choices": [choice]})
    yield (
        "meta",
        _sse(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]}),
    )
    yield "meta", _sse(None, {**base, "choices": [], "usage": completion["usage"]})
    yield "meta", _sse(None, "[DONE]")


def _error_event(anthropic: bool) -> bytes:
    if anthropic:
        return _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "injected mid-stream"}})
    return _sse(None, {"error": {"message": "injected mid-stream", "type": "server_error"}})


def _reset_connection(environ: dict[str, Any]) -> None:
    sock = environ.get("fake.socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock._real_close()  # linger 0: the peer sees a TCP reset (close() waits for makefile refs)


def serve(port: int, latency: float, video_latency: float | None, host: str = "127.0.0.1") -> None:
    """Run the fake upstream until killed."""
    import signal

    import gevent
    from gevent.event import Event
    from gevent.pywsgi import WSGIHandler, WSGIServer

    app = FakeUpstream(latency, video_latency)
    serials = itertools.count(1)

    class Handler(WSGIHandler):
        def get_environ(self) -> dict[str, Any]:
            environ = super().get_environ()
            environ["fake.socket"] = self.socket
            if not hasattr(self, "serial"):
                self.serial = next(serials)  # one per TCP connection (a handler serves one)
            environ["fake.connection"] = self.serial
            return environ

    class Server(WSGIServer):
        def handle(self, sock: socket.socket, address: Any) -> None:
            # pywsgi sends headers and body separately: without NODELAY, Nagle plus delayed ACK
            # adds ~40 ms per answer on a kept-alive connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    server = Server((host, port), app, handler_class=Handler, log=None, error_log=None, backlog=2048)
    server.start()
    url = f"http://{host}:{server.server_port}"
    print(
        f"fake upstream listening on {url}\n"
        f"  anthropic: ANTHROPIC_API_KEY=sk-ant-fake ANTHROPIC_BASE_URL={url}\n"
        f"  openai:    LLM_PROVIDER=openai OPENAI_API_KEY=sk-fake OPENAI_BASE_URL={url}/v1\n"
        f"  control:   curl {url}/_stats",
        flush=True,
    )
    # Ctrl-C stops it quietly, as SIGTERM does (a KeyboardInterrupt raised in gevent's hub is
    # printed as a traceback on its way out).
    stopped = Event()
    gevent.signal_handler(signal.SIGINT, stopped.set)
    stopped.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    from gevent import monkey

    monkey.patch_all()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--video-latency", type=float, default=None, help="seconds per video-mode answer")
    args = parser.parse_args(argv)
    serve(args.port, args.latency, args.video_latency, args.host)


if __name__ == "__main__":
    main()
