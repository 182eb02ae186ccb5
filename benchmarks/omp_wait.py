"""How long torch's idle OpenMP threads spin, and what it costs when two processes share the
cores: one tiny-model training loop alone and two at once, per setting.

    .venv/bin/python benchmarks/omp_wait.py [--steps 100] [--rounds 3]

torch's Linux wheels run their intra-op threads on GNU OpenMP (``libgomp``). An idle thread
busy-waits ``GOMP_SPINCOUNT`` iterations (300,000 by default, a few milliseconds) before it
sleeps, and libgomp only shortens that when its own threads outnumber the cores: it does not
see other processes. The models this project trains on a CPU are tiny (hidden 128), so a step
is thousands of short parallel regions, each ending in such a wait; two 2-thread processes on
2 cores (the test suite and its background model build, the Dask interpretation workers) then
spend their time spinning in each other's way. ``iea`` sets ``GOMP_SPINCOUNT=1000`` when it is
imported before torch (:mod:`iea`); this measures why.

Each setting runs the same workload (``--steps`` forward/backward/AdamW steps of a Qwen3 of
the tiny models' text size on a batch of 8 x 170 random tokens, 2 torch threads) in fresh
processes: ``--rounds`` times alone, then ``--rounds`` times two at once. Reported: the median
seconds of one loop alone and of each loop in a pair, and the pair's throughput relative to the
default setting's pair. The environment variables are read when libgomp loads, hence one
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
    "GOMP_SPINCOUNT=1000 (iea's)": {"GOMP_SPINCOUNT": "1000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def _work(steps: int) -> None:
    """The measured loop; prints its seconds."""
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
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randint(0, cfg.vocab_size, (8, 170))
    start = time.perf_counter()
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    print(time.perf_counter() - start)


def _run(env: dict[str, str], steps: int, at_once: int) -> list[float]:
    """Seconds of each of ``at_once`` loops started together with ``env`` (on top of a clean
    environment: any GOMP_/OMP_ variable of the caller's is removed first)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOMP_", "OMP_"))}
    cmd = [sys.executable, __file__, "--work", str(steps)]
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
    args = parser.parse_args()
    if args.work:
        _work(args.work)
        return
    print(f"cores {len(os.sched_getaffinity(0))}; {args.steps} steps a loop, 2 threads each")
    print("| setting | alone s | each of two at once s | pair throughput vs default |")
    print("|---|---|---|---|")
    pair_default = None
    for name, env in SETTINGS.items():
        alone = [_run(env, args.steps, 1)[0] for _ in range(args.rounds)]
        pair = [max(_run(env, args.steps, 2)) for _ in range(args.rounds)]
        a, p = statistics.median(alone), statistics.median(pair)
        pair_default = pair_default or p
        print(f"| {name} | {a:.2f} | {p:.2f} | {pair_default / p:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
