"""An OpenAI-compatible server for the char-GPT that train.py trains (stdlib http.server + torch).

    /usr/bin/python3 serve.py --port 8100         # what `switchyard run examples/chargpt/job.yaml` trained
    /usr/bin/python3 serve.py --port 8100 --checkpoint checkpoints      # newest verified step-* under checkpoints/
    /usr/bin/python3 serve.py --port 8100 --checkpoint checkpoints/step-00000200

--checkpoint is one step-NNNNNNNN checkpoint, or a folder: the newest checkpoint that verifies is served, from the
folder's own step-* folders and from those one level down (`switchyard run` gives each run its own folder,
$SWITCHYARD_HOME/checkpoints/<job name>/<job id>/step-*, which is the default here with the job name chargpt).

Endpoints: POST /v1/completions and /v1/chat/completions (streaming SSE `data: {...}` ... `data: [DONE]`, or one JSON
answer), GET /v1/models, GET /health (503 while the model loads, 200 once loaded) and GET /metrics with vLLM's
`vllm:num_requests_running` / `vllm:num_requests_waiting` gauges, so switchyard's gateway drives it with its `vllm`
engine adapter. Sampling: temperature (0 = greedy), top_p, max_tokens, seed, stop. It listens on 127.0.0.1 unless
--host says otherwise.

Without any verified checkpoint it serves randomly initialised weights and says so on stderr (tests need no training
run); --require-checkpoint refuses that instead. The model class is train.py's GPT (imported, not copied).
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print("serve: %s" % msg, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--checkpoint",
        default=os.environ.get("CHARGPT_CHECKPOINT") or default_checkpoint_folder(),
        help="a step-NNNNNNNN checkpoint folder, or a folder holding them, directly or one level down (the newest "
        "verified one is served); default: $SWITCHYARD_HOME/checkpoints/chargpt, where `switchyard run` writes",
    )
    p.add_argument("--model-name", default="chargpt", help="the id /v1/models reports")
    p.add_argument("--require-checkpoint", action="store_true", help="exit instead of serving random weights")
    p.add_argument("--max-num-seqs", type=int, default=8, help="requests generated at once; the rest wait (queue)")
    p.add_argument("--max-tokens-limit", type=int, default=2048)
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds to sleep per generated token (tests)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the random weights when there is no checkpoint")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# Checkpoint and model
# ---------------------------------------------------------------------------------------------


def default_checkpoint_folder():
    """Where `switchyard run examples/chargpt/job.yaml` writes: $SWITCHYARD_HOME/checkpoints/chargpt."""
    home = os.environ.get("SWITCHYARD_HOME") or os.path.join(os.path.expanduser("~"), ".switchyard")
    return os.path.join(home, "checkpoints", "chargpt")


def is_step(name):
    return name.startswith("step-") and name[5:].isdigit()


def checkpoint_candidates(path):
    """step-* folders in `path` and in its subfolders (one level: the per-run folders of `switchyard run`, and its
    `latest` link), each once, newest first: by the time its manifest was written, then by step."""
    found = {}

    def add_from(folder):
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            full = os.path.join(folder, name)
            if is_step(name) and os.path.isdir(full):
                found.setdefault(os.path.realpath(full), full)

    add_from(path)
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if not is_step(name) and os.path.isdir(sub):
            add_from(sub)

    def newness(full):
        try:
            written = os.stat(os.path.join(full, "MANIFEST.json")).st_mtime
        except OSError:
            written = 0.0
        return (written, int(os.path.basename(full)[5:]))

    return sorted(found.values(), key=newness, reverse=True)


def find_checkpoint(path, verify):
    """(checkpoint folder or None, notes). A step-* folder is taken as is if it verifies; a folder gives the newest
    checkpoint in it or one level down that verifies (a half-written or corrupted newer one is skipped, with a note)."""
    notes = []
    if not os.path.isdir(path):
        return None, ["%s: no such folder (train first: switchyard run examples/chargpt/job.yaml)" % path]
    if os.path.isfile(os.path.join(path, "MANIFEST.json")):
        problems = verify(path)
        return (path, notes) if not problems else (None, ["%s: %s" % (path, "; ".join(problems))])
    for full in checkpoint_candidates(path):
        problems = verify(full)
        if not problems:
            return full, notes
        notes.append("%s does not verify (%s); trying an older one" % (full, "; ".join(problems[:3])))
    notes.append("%s: no verified step-* checkpoint in it or in its subfolders" % path)
    return None, notes


class Model:
    """The GPT of train.py with its vocabulary, and next-token logits for a context."""

    def __init__(self, args):
        import torch

        sys.path.insert(0, HERE)
        try:
            import switchyard
        except ImportError:  # run by hand without PYTHONPATH=sdk/python
            sys.path.insert(0, os.path.join(HERE, "..", "..", "sdk", "python"))
            import switchyard
        import train  # the model class and the text generator: one definition, in train.py

        torch.set_num_threads(1)
        self.torch = torch
        self.device = torch.device("cpu")
        if torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        ckpt, notes = find_checkpoint(args.checkpoint, switchyard.verify_checkpoint)
        for note in notes:
            log(note)
        if ckpt is not None:
            state = torch.load(os.path.join(ckpt, "state.pt"), map_location="cpu")
            targs = state["args"]
            self.vocab = list(state["vocab"])
            self.block = int(targs["block"])
            self.model = train.GPT(len(self.vocab), targs["n_layer"], targs["n_embd"], targs["n_head"], self.block)
            self.model.load_state_dict(state["model"])
            self.source = "%s (step %d)" % (ckpt, state["step"])
        else:
            if args.require_checkpoint:
                raise SystemExit("serve: no verified checkpoint under %s (--require-checkpoint)" % args.checkpoint)
            # The same vocabulary and shape as train.py's defaults, so a later checkpoint is a drop-in replacement.
            self.vocab = sorted(set(train.make_text()))
            self.block = 64
            torch.manual_seed(args.seed)
            self.model = train.GPT(len(self.vocab), 2, 64, 4, self.block)
            self.source = "random weights"
            log("WARNING: no verified checkpoint under %s; serving RANDOMLY INITIALISED weights" % args.checkpoint)
        self.model.to(self.device).eval()
        self.stoi = {c: i for i, c in enumerate(self.vocab)}
        self.unknown = self.stoi.get(" ", 0)

    def encode(self, text):
        ids = [self.stoi.get(c, self.unknown) for c in text]
        return ids or [self.stoi.get("\n", 0)]

    def next_logits(self, ids):
        """Logits of the token after `ids` (cropped to the context window). train.GPT.forward returns the loss, so
        this runs its modules up to the head."""
        torch, m = self.torch, self.model
        idx = torch.tensor([ids[-self.block :]], dtype=torch.long, device=self.device)
        x = m.tok(idx) + m.pos(torch.arange(idx.size(1), device=self.device))
        return m.head(m.ln(m.blocks(x)))[0, -1, :]

    def sample(self, logits, temperature, top_p, generator):
        torch = self.torch
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=generator))


# ---------------------------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------------------------


class State:
    def __init__(self, args):
        self.args = args
        self.model = None
        self.load_error = None
        self.lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.requests_ok = 0
        self.slots = threading.BoundedSemaphore(args.max_num_seqs)
        self.created = int(time.time())

    def load(self):
        try:
            began = time.time()
            self.model = Model(self.args)
            log("loaded %s in %.1f s; ready on %s:%d" % (self.model.source, time.time() - began, self.args.host, self.args.port))
        except BaseException as exc:  # noqa: B902 - reported through /health, then the process exits
            self.load_error = str(exc)
            log("cannot load the model: %s" % exc)
            os._exit(1)


class BadRequest(Exception):
    pass


def completion_params(body, chat, limit):
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: a non-empty list is required")
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):  # [{"type":"text","text":...}]
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise BadRequest("messages: each message needs a string content")
            parts.append(content)
        prompt = "\n".join(parts) + " "
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise BadRequest("prompt: one string (batched prompts are not supported)")
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt: a string is required")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16 if not chat else 64))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1 or max_tokens > limit:
        raise BadRequest("max_tokens: an integer 1..%d" % limit)
    temperature = body.get("temperature", 1.0)
    top_p = body.get("top_p", 1.0)
    if not isinstance(temperature, (int, float)) or temperature < 0 or temperature > 5:
        raise BadRequest("temperature: a number 0..5")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise BadRequest("top_p: a number in (0, 1]")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise BadRequest("seed: an integer")
    if body.get("n", 1) != 1:
        raise BadRequest("n: only 1 is supported")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("stop: a string or a list of strings")
    options = body.get("stream_options") or {}
    return {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": seed,
        "stop": stop,
        "stream": body.get("stream") is True,
        "include_usage": isinstance(options, dict) and options.get("include_usage") is True,
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
    }


def generate(state, params):
    """Yields text pieces (one character each, held back while they may begin a stop string), then returns the finish
    reason ("stop" or "length") as the generator's value."""
    model = state.model
    torch = model.torch
    ids = model.encode(params["prompt"])
    with state.lock:
        state.prompt_tokens += len(ids)
    generator = torch.Generator()
    generator.manual_seed(params["seed"] if params["seed"] is not None else int.from_bytes(os.urandom(7), "big"))
    text, sent = "", 0
    hold = max((len(s) for s in params["stop"]), default=1) - 1  # a stop string may be in the making
    delay = state.args.token_delay
    for _ in range(params["max_tokens"]):
        with torch.no_grad():
            token = model.sample(model.next_logits(ids), params["temperature"], params["top_p"], generator)
        ids.append(token)
        with state.lock:
            state.generation_tokens += 1
        text += model.vocab[token]
        hits = [at for at in (text.find(s, max(0, sent - hold)) for s in params["stop"]) if at >= 0]
        if hits:
            if min(hits) > sent:
                yield text[sent : min(hits)]
            return "stop"
        if len(text) - hold > sent:
            yield text[sent : len(text) - hold]
            sent = len(text) - hold
        if delay:
            time.sleep(delay)
    if len(text) > sent:
        yield text[sent:]
    return "length"


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chargpt-serve/1"
    state = None  # set in main()

    def log_message(self, fmt, *args):  # access log off: the gateway logs requests
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def send_json(self, status, obj, extra_headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, status, text, ctype="text/plain; version=0.0.4"):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status, message, code, etype="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": etype, "code": code, "param": None}})

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def sse(self, obj):
        self.chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self):
        st = self.state
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if st.model is None:
                self.send_text(503, "loading\n", "text/plain")
            else:
                self.send_text(200, "", "text/plain")
        elif path == "/metrics":
            name = st.args.model_name
            lines = []
            for metric, kind, value, help_text in (
                ("vllm:num_requests_running", "gauge", st.running, "Requests being generated."),
                ("vllm:num_requests_waiting", "gauge", st.waiting, "Requests waiting for a generation slot."),
                ("vllm:kv_cache_usage_perc", "gauge", st.running / st.args.max_num_seqs, "Share of generation slots in use."),
                ("vllm:prompt_tokens_total", "counter", st.prompt_tokens, "Prompt tokens processed."),
                ("vllm:generation_tokens_total", "counter", st.generation_tokens, "Tokens generated."),
                ("vllm:request_success_total", "counter", st.requests_ok, "Requests finished."),
            ):
                lines += ["# HELP %s %s" % (metric, help_text), "# TYPE %s %s" % (metric, kind)]
                lines.append('%s{model_name="%s"} %s' % (metric, name, value))
            self.send_text(200, "\n".join(lines) + "\n")
        elif path == "/v1/models":
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": st.args.model_name, "object": "model", "created": st.created, "owned_by": "switchyard-example"}],
                },
            )
        else:
            self.send_error_json(404, "no route %s %s" % (self.command, path), "not_found")

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self.send_error_json(404, "no route POST %s" % path, "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        st = self.state
        if st.model is None:
            self.send_error_json(503, "the model is still loading", "model_loading", "service_unavailable")
            return
        chat = path == "/v1/chat/completions"
        try:
            params = completion_params(json.loads(raw or b"{}"), chat, st.args.max_tokens_limit)
        except (BadRequest, ValueError) as exc:
            self.send_error_json(400, str(exc), "invalid_request")
            return
        with st.lock:
            st.waiting += 1
        st.slots.acquire()
        with st.lock:
            st.waiting -= 1
            st.running += 1
        try:
            self.answer(params, chat)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away: stop generating
        finally:
            st.slots.release()
            with st.lock:
                st.running -= 1

    def answer(self, params, chat):
        st = self.state
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = params["model"] or st.args.model_name
        obj = "chat.completion" if chat else "text_completion"
        gen = generate(st, params)
        n_prompt = len(st.model.encode(params["prompt"]))
        if not params["stream"]:
            pieces = []
            try:
                while True:
                    pieces.append(next(gen))
            except StopIteration as stop:
                finish = stop.value
            text = "".join(pieces)
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}
                if chat
                else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            )
            usage = {"prompt_tokens": n_prompt, "completion_tokens": len(text), "total_tokens": n_prompt + len(text)}
            self.send_json(200, {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage})
            with st.lock:
                st.requests_ok += 1
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        kind = obj + ".chunk" if chat else obj

        def event(delta_or_text, finish):
            choice = (
                {"index": 0, "delta": delta_or_text, "logprobs": None, "finish_reason": finish}
                if chat
                else {"index": 0, "text": delta_or_text, "logprobs": None, "finish_reason": finish}
            )
            return {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]}

        if chat:
            self.sse(event({"role": "assistant", "content": ""}, None))
        n = 0
        try:
            while True:
                piece = next(gen)
                n += len(piece)  # one character is one token
                self.sse(event({"content": piece} if chat else piece, None))
        except StopIteration as stop:
            finish = stop.value
        self.sse(event({} if chat else "", finish))
        if params["include_usage"]:
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}
            self.sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [], "usage": usage})
        self.sse(b"[DONE]")
        self.chunk(b"")
        with st.lock:
            st.requests_ok += 1


def main():
    args = parse_args()
    state = State(args)
    Handler.state = state
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    log("listening on %s:%d, loading the model (GET /health answers 503 until it is loaded)" % (args.host, args.port))
    threading.Thread(target=state.load, name="load", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
