"""A minimal text-to-image HTTP server on the configuration `sdagent verify` proves.

Run it under the plan, so the process gets the preloads, threads and pinning,
while `sdagent.load_pipeline` applies the precision, memory format and
compiled packages of the same plan:

    sdagent-tuned python serve.py --model /var/lib/sdagent/models/sd15 --port 8000
    # or, without the Ansible roles:  sdagent exec -- python serve.py --model DIR

    curl -s localhost:8000/health
    curl -s -X POST localhost:8000/generate -d '{"prompt": "sailing ship in storm", "steps": 20}' -o ship.png

A request without steps or guidance gets the model family's (pipe.sdagent["defaults"]: SD-Turbo and
SDXL-Turbo 1 step without guidance, LCM 4 steps, SD 1.x/2.x 20 steps at 7.5, SDXL 5): the request the
compiled packages or the OpenVINO export were built for.

One request at a time per process (a CPU instance is saturated by one image);
for throughput, run one server per instance of the plan (SDAGENT_INSTANCE=i).
Standard library only, besides sdagent itself.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sdagent
from sdagent.errors import SdagentError


def make_handler(pipe, lock: threading.Lock, max_steps: int):
    defaults = pipe.sdagent["defaults"]

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str) -> None:
            self._send(code, json.dumps({"error": message}).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/health":
                return self._error(404, f"no such path: {self.path}")
            self._send(200, json.dumps({"ok": True, "sdagent": pipe.sdagent}, default=str).encode(),
                       "application/json")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/generate":
                return self._error(404, f"no such path: {self.path}")
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = str(req["prompt"])
                steps = int(req.get("steps", defaults["steps"]))
                guidance = float(req.get("guidance", defaults["guidance"]))
                seed = int(req.get("seed", 0))
                if not prompt.strip() or not 1 <= steps <= max_steps or not 0 <= guidance <= 100:
                    raise ValueError(f"prompt must be non-empty, steps in 1..{max_steps} and guidance in 0..100")
            except (ValueError, KeyError, TypeError) as exc:
                return self._error(400, f"bad request: {exc}")
            import torch

            with lock, torch.no_grad():
                image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=defaults["height"],
                             width=defaults["width"], generator=torch.Generator("cpu").manual_seed(seed)).images[0]
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            self._send(200, buf.getvalue(), "image/png")

        def log_message(self, fmt: str, *args) -> None:
            sys.stderr.write(f"serve: {fmt % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="diffusers pipeline directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=100)
    a = ap.parse_args(argv)
    try:
        pipe = sdagent.load_pipeline(a.model, height=a.height, width=a.width)
    except SdagentError as exc:  # one line, as the agent's CLI says it
        print(f"serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    server = ThreadingHTTPServer((a.host, a.port), make_handler(pipe, threading.Lock(), a.max_steps))
    print(f"serve: http://{a.host}:{server.server_address[1]}/ ({pipe.sdagent['run']})", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
