"""How long torch's idle OpenMP threads spin, and what it costs when two processes share the
cores: one tiny-model training loop alone and two at once, per setting.

    .venv/bin/python benchmarks/omp_wait.py [--steps 100] [--rounds 3]

torch's Linux wheels run their intra-op threads on GNU OpenMP (``libgomp``). An idle thread
busy-waits ``GOMP_SPINCOUNT`` iterations (300,000 by default, a few milliseconds) before it
sleeps, and libgomp only shortens that when its own threads outnumber the cores: it does not
see other processes. The models this project trains on a CPU are tiny (hidden 128), so a step
is thousands of short parallel regions, each ending in such a wait; two 2-thread processes on
2 cores (the test suite and its background model build, the Dask interpretation workers) then
spend their time spinning in each other's way. A short spin fixes that and costs a lone process
its wake-ups: greedy generation (short parallel regions with Python between them) slows. The
suite sets ``GOMP_SPINCOUNT=1000`` for all its processes (``tests/conftest.py``); the ``iea``
command keeps the default. This measures both sides.

Each setting runs the same workloads (a Qwen3 of the tiny models' text size, 2 torch threads)
in fresh processes: training, ``--steps`` forward/backward/AdamW steps on a batch of 8 x 170
random tokens, ``--rounds`` times alone, then ``--rounds`` times two at once; generation,
``--steps // 10`` greedy calls of 40 new tokens for 16 prompts (short parallel regions with
Python between them: where a short spin costs a wake-up), ``--rounds`` times alone. Reported:
the medians of one loop alone and of each loop in a pair, and the pair's throughput relative
to the default setting's pair. The environment variables are read when libgomp loads, hence one
process per run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SETTINGS: dict[str, dict[str, str]] = {
    "default (300000)": {},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def _work(steps: int, kind: str) -> None:
    """The measured loop (``train`` or ``generate``); prints its seconds."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = Qwen3Config(
        vocab_size=1536,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
    )
    model = Qwen3ForCausalLM(cfg)
    if kind == "generate":  # greedy, 40 new tokens for 16 prompts of 60, steps // 10 times
        model.eval()
        x = torch.randint(0, cfg.vocab_size, (16, 60))
        gen = {"max_new_tokens": 40, "min_new_tokens": 40, "do_sample": False}
        with torch.no_grad():
            model.generate(x, **{**gen, "max_new_tokens": 2, "min_new_tokens": 2})
            start = time.perf_counter()
            for _ in range(max(1, steps // 10)):
                model.generate(x, **gen)
        print(time.perf_counter() - start)
        return
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randint(0, cfg.vocab_size, (8, 170))
    start = time.perf_counter()
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    print(time.perf_counter() - start)


def _run(env: dict[str, str], steps: int, at_once: int, kind: str = "train") -> list[float]:
    """Seconds of each of ``at_once`` loops started together with ``env`` (on top of a clean
    environment: any GOMP_/OMP_ variable of the caller's is removed first)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOMP_", "OMP_"))}
    cmd = [sys.executable, __file__, "--work", str(steps), "--kind", kind]
    procs = [
        subprocess.Popen(cmd, env={**base, **env}, stdout=subprocess.PIPE, text=True)
        for _ in range(at_once)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"workload failed ({proc.returncode}) under {env}")
        out.append(float(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        _work(args.work, args.kind)
        return
    print(f"cores {len(os.sched_getaffinity(0))}; {args.steps} steps a loop, 2 threads each")
    print(
        "| setting | training alone s | each of two trainings at once s | pair throughput vs"
        " default | generation alone s |"
    )
    print("|---|---|---|---|---|")
    pair_default = None
    for name, env in SETTINGS.items():
        alone = [_run(env, args.steps, 1)[0] for _ in range(args.rounds)]
        pair = [max(_run(env, args.steps, 2)) for _ in range(args.rounds)]
        gen = [_run(env, args.steps, 1, "generate")[0] for _ in range(args.rounds)]
        a, p, g = (statistics.median(v) for v in (alone, pair, gen))
        pair_default = pair_default or p
        print(f"| {name} | {a:.2f} | {p:.2f} | {pair_default / p:.2f}x | {g:.2f} |", flush=True)


if __name__ == "__main__":
    main()
