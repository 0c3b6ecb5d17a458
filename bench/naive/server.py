"""The naive app beside a benchmark's stack: on the stack's database, with as many uvicorn
processes as the stack's API, stopped with the stack."""

from bench.stack import Stack, answers
from cli.embedded import free_port

NAME = "naive"  # its process group in the stack, and in the benchmark's CPU samples


def start_naive(stack: Stack, timeout: float = 60) -> str:
    """Start the naive app and wait until it answers; its base URL."""
    port = free_port()
    workers = str(stack.config.api_workers)
    stack.spawn(NAME, ["bench.naive", "--workers", workers, "--port", str(port)])
    base_url = f"http://127.0.0.1:{port}"
    stack.wait_until(lambda: answers(base_url + "/openapi.json"), timeout)
    return base_url
