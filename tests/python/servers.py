"""`caravan serve` processes a test script starts itself: the binary is
CARAVAN_BIN, the store CARAVAN_MODELS (holding the default model) and the
servers' log goes to CARAVAN_TEST_DIR/servers.log. They run in ggml's
arithmetic, so that answers can be compared with llama.cpp's."""

import os
import signal
import socket
import subprocess
import time

import openai
import raw_http

BIN = os.environ["CARAVAN_BIN"]
ROOT = os.environ["CARAVAN_TEST_DIR"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`caravan serve` on a free loopback port with its jobs' data in `data`."""

    def __init__(self, data, *flags, env=None, kv_memory="256MiB"):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = [BIN, "serve", "--host", f"127.0.0.1:{port}", "--kv-memory", kv_memory, "--arithmetic", "ggml", "--data-dir", data, *flags]
        with open(os.path.join(ROOT, "servers.log"), "ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while True:
            try:
                if raw_http.request(self.url, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, "the server did not become healthy"
            time.sleep(0.1)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
