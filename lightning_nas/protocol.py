"""``python -m lightning_nas protocol --config protocol.yaml``: a paper's reproduction protocol as one command.

A protocol file names the search config(s), the search seeds, the selection rule, the final retraining and its
seeds, and the executor. The command expands it into ordinary ``fit`` runs, each its own run directory under
``<root>/<protocol name>/`` (``search/<name>/seed<k>``, ``select/<name>/search_seed<k>``, ``final/<name>/seed<s>``),
runs them stage by stage, and ends with ``report`` over the tree (``report.html``, grouped by stage and method:
the config key ``run.name``) and
``protocol.json`` (per search entry: every run and its selection score, the pick, the final mean ± std).

Selection rules: ``benchmark`` (NAS-Bench-201 searches: the benchmark's CIFAR-10 accuracy of each search's final
cell, from its summary) or ``retrain`` (a short retraining of each search's cell with ``selection.config``; the
highest final held-out accuracy wins, as DARTS picks the best of 4 searches). Selection is per search entry, so
one file compares methods. The final stage retrains each entry's picked cell once per final seed (DARTS space;
leave ``final`` out for a benchmark-only protocol).

Resumable: running the same command again skips finished runs (their summary.json exists), resumes interrupted
ones from their checkpoints/last.ckpt, and restarts runs that died before writing a checkpoint. With the local
executor the fits end with the protocol, however it ends (even ``kill -9``): on Linux each gets SIGTERM when the
protocol dies, saves its step and stops, so a rerun never meets an orphan still writing its run.

Executors: ``local`` runs ``parallel`` fits at a time on this machine (``threads`` torch threads each), or with
``gpus: [0, 1, ...]`` one fit per listed GPU at a time (each pinned by CUDA_VISIBLE_DEVICES);
``submitit-local`` and ``slurm`` submit each stage as a job array through submitit (one job per run; ``slurm``
options such as ``slurm_partition``, ``gpus_per_node``, ``timeout_min`` pass to submitit's ``update_parameters``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lightning_nas.errors import ConfigError, LightningNASError
from lightning_nas.run_lock import RunLock

EXECUTORS = ("local", "submitit-local", "slurm")
RULES = ("benchmark", "retrain")


@dataclass
class Job:
    """One ``fit``: its stage, run name and seed, and the command-line arguments after ``fit``."""

    stage: str
    name: str
    seed: int
    args: list[str]
    root: Path
    version: str = ""

    @property
    def run_dir(self) -> Path:
        return self.root / self.name / (self.version or f"seed{self.seed}")

    def argv(self) -> list[str]:
        argv = ["fit", *self.args, "--seed_everything", str(self.seed), "--run.root", str(self.root),
                "--run.name", self.name, "--run.version", self.run_dir.name]
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():  # interrupted: continue it where it lives
            argv += ["--ckpt_path", str(last)]
        return argv

    @property
    def finished(self) -> bool:
        return (self.run_dir / "summary.json").is_file()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "summary.json").read_text())


@dataclass
class Protocol:
    name: str
    root: Path
    searches: list[dict[str, Any]]
    search_seeds: list[int]
    selection: dict[str, Any]
    final: Optional[dict[str, Any]]
    executor: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.root / self.name


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(f"protocol: {message}")


def load_protocol(path: Path, root: Optional[str] = None) -> Protocol:
    if not path.is_file():
        raise ConfigError(f"protocol file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"protocol file {path} is not valid YAML{line}: {getattr(err, 'problem', err)}") from None
    _require(isinstance(spec, dict), f"the file must be a mapping of keys (name, searches, search_seeds, selection, "
                                     f"final, executor), not a {type(spec).__name__}")
    _require(isinstance(spec.get("searches"), list) and spec["searches"],
             "`searches` must list at least one search ({name, config, args})")
    for s in spec["searches"]:
        _require(isinstance(s, dict) and "name" in s and "config" in s, f"a search needs a name and a config: {s}")
        _require(Path(str(s["config"])).is_file(), f"search config {s['config']} does not exist")
        _require(isinstance(s.get("args", []), list), f"search {s['name']}: `args` must be a list of command-line "
                                                       "arguments")
    names = [str(s["name"]) for s in spec["searches"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    _require(not twice, f"two searches are named {', '.join(twice)}: each search needs its own name (its runs live "
                        "under search/<name>/)")
    seeds = spec.get("search_seeds", [0])
    _require(isinstance(seeds, list) and seeds and all(_is_int(x) for x in seeds),
             f"search_seeds must be a list of integers, e.g. [0, 1, 2], got {seeds!r}")
    selection = spec.get("selection") or {"rule": "benchmark"}
    _require(isinstance(selection, dict), f"selection must be a mapping, e.g. {{rule: benchmark}}, got {selection!r}")
    _require(selection.get("rule") in RULES, f"selection.rule must be one of {list(RULES)}, got "
                                             f"{selection.get('rule')!r}")
    if selection["rule"] == "retrain":
        _require(Path(str(selection.get("config"))).is_file(), "selection.rule retrain needs selection.config, a "
                                                               "retraining config that exists")
    final = spec.get("final")
    if final is not None:
        _require(isinstance(final, dict), f"final must be a mapping {{config, seeds, args}}, got {final!r}")
        _require(Path(str(final.get("config"))).is_file(), "final.config must be a retraining config that exists")
        final_seeds = final.get("seeds", [0])
        _require(isinstance(final_seeds, list) and final_seeds and all(_is_int(x) for x in final_seeds),
                 f"final.seeds must be a list of integers, got {final_seeds!r}")
    executor = spec.get("executor") or {}
    _require(isinstance(executor, dict), f"executor must be a mapping, e.g. {{kind: local}}, got {executor!r}")
    _require(executor.get("kind", "local") in EXECUTORS, f"executor.kind must be one of {list(EXECUTORS)}")
    return Protocol(spec.get("name") or path.stem, Path(root or spec.get("root") or "ckpt/protocols"),
                    spec["searches"], [int(s) for s in seeds], selection, final, executor)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- running fits ----------------------------------------------------------------------------------------------
def _parent_death_signal() -> Optional[Any]:
    """A function for the child to run before it starts (resolved here: a forked child of a threaded process must
    not import): Linux's ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, so the fit gets SIGTERM when the thread that started it
    ends and a protocol killed with ``kill -9`` leaves no fit running on (it saves its step and stops, as on
    preemption). None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import functools
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, 1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def run_fit(argv: list[str], log: str, threads: int, gpu: Optional[str] = None,
            die_with_parent: bool = False) -> int:
    """One ``python -m lightning_nas fit ...`` in a subprocess (also what a submitit job runs); ``gpu`` pins it to
    one GPU (CUDA_VISIBLE_DEVICES); ``die_with_parent``: the fit gets SIGTERM when this process dies (Linux)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    env.pop("LIGHTNING_NAS_RUN_DIR", None)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        return subprocess.run([sys.executable, "-m", "lightning_nas", *argv], stdout=out, stderr=subprocess.STDOUT,
                              env=env, preexec_fn=_parent_death_signal() if die_with_parent else None).returncode


def run_stage(jobs: list[Job], protocol: Protocol) -> None:
    """Run the stage's unfinished jobs with the protocol's executor; refuse to go on if one fails."""
    todo = [j for j in jobs if not j.finished]
    for job in todo:
        owner = RunLock(job.run_dir).live_owner()
        if owner is not None:  # never delete or start a run that another process still writes
            raise LightningNASError(
                f"{job.run_dir} is being written by process {owner.get('pid')} on {owner.get('host')} (an earlier "
                "protocol's fit, or this protocol started twice): wait for it to end (or stop it), then run the same "
                "command again")
        if job.run_dir.exists() and not (job.run_dir / "checkpoints" / "last.ckpt").is_file():
            shutil.rmtree(job.run_dir)  # died before its first checkpoint: start it again
    if not todo:
        return
    ex = protocol.executor
    kind, threads = ex.get("kind", "local"), int(ex.get("threads", 1))
    logs = [str(protocol.dir / "logs" / f"{j.name.replace('/', '_')}_{j.run_dir.name}.log") for j in todo]
    print(f"protocol {protocol.name}: {todo[0].stage}: {len(todo)} run(s) with the {kind} executor", flush=True)
    if kind == "local":
        gpus = [str(g) for g in ex.get("gpus") or []]
        free: queue.Queue = queue.Queue()
        for g in gpus:
            free.put(g)

        def one(job_log: tuple[Job, str]) -> int:
            gpu = free.get() if gpus else None  # one fit per GPU at a time
            try:
                return run_fit(job_log[0].argv(), job_log[1], threads, gpu, die_with_parent=True)
            finally:
                if gpu is not None:
                    free.put(gpu)

        with ThreadPoolExecutor(len(gpus) or int(ex.get("parallel", 1))) as pool:
            codes = list(pool.map(one, zip(todo, logs)))
    else:
        import submitit

        executor = submitit.AutoExecutor(folder=protocol.dir / "submitit",
                                         cluster="local" if kind == "submitit-local" else "slurm")
        options = (ex.get("slurm") or {}) if kind == "slurm" else {"timeout_min": 600}
        executor.update_parameters(**options)
        submitted = executor.map_array(run_fit, [j.argv() for j in todo], logs, [threads] * len(todo))
        codes = [job.result() for job in submitted]
    failed = [(j, log) for j, log, code in zip(todo, logs, codes) if code != 0 or not j.finished]
    if failed:
        raise LightningNASError(f"{len(failed)} run(s) failed, e.g. {failed[0][0].run_dir} (log: {failed[0][1]}); "
                                "fix the cause and run the same command again: finished runs are kept")


# ---- the protocol ----------------------------------------------------------------------------------------------
def search_jobs(p: Protocol) -> list[Job]:
    return [Job("search", f"search/{s['name']}", seed, ["--config", s["config"], *map(str, s.get("args", []))],
                p.dir) for s in p.searches for seed in p.search_seeds]


def selection_jobs(p: Protocol, searches: list[Job]) -> list[Job]:
    sel = p.selection
    return [Job("select", f"select/{j.name.split('/', 1)[1]}", int(sel.get("seed", 0)),
                ["--config", sel["config"], "--model.init_args.genotype", str(j.run_dir),
                 *map(str, sel.get("args", []))], p.dir, version=f"search_seed{j.seed}") for j in searches]


def score(job: Job, rule: str) -> float:
    metrics = job.summary().get("metrics") or {}
    key = "benchmark/cifar10_test" if rule == "benchmark" else "val/acc"
    if metrics.get(key) is None:
        raise ConfigError(f"protocol: {job.run_dir} has no {key} to select by (rule {rule!r}: NB201 searches with the "
                          "BenchmarkAccuracy callback for 'benchmark', a retraining config for 'retrain')")
    return float(metrics[key])


def run_protocol(p: Protocol) -> dict[str, Any]:
    """Every stage, then the report. Selection and final retrainings are per search entry (per method), so one
    protocol file compares methods: each gets its best-of-seeds cell and that cell's final accuracies."""
    from lightning_nas.reporting.report import write_report
    from lightning_nas.reporting.runs import fmt_mean_std, mean_std

    searches = search_jobs(p)
    run_stage(searches, p)
    if p.selection["rule"] == "retrain":
        judges = selection_jobs(p, searches)
        run_stage(judges, p)
    else:
        judges = searches
    scores = {j.run_dir: score(judge, p.selection["rule"]) for j, judge in zip(searches, judges)}
    result: dict[str, Any] = {"protocol": p.name, "selection_rule": p.selection["rule"], "methods": {}}
    finals: dict[str, list[Job]] = {}
    for entry in p.searches:
        own = [j for j in searches if j.name == f"search/{entry['name']}"]
        picked = max(own, key=lambda j: (scores[j.run_dir], -j.seed))
        result["methods"][entry["name"]] = {
            "searches": [{"run": str(j.run_dir), "seed": j.seed, "score": scores[j.run_dir],
                          "genotype": j.summary().get("genotype")} for j in own],
            "picked": {"run": str(picked.run_dir), "seed": picked.seed, "genotype": picked.summary().get("genotype")}}
        if p.final is not None:
            finals[entry["name"]] = [
                Job("final", f"final/{entry['name']}", int(seed), ["--config", p.final["config"],
                    "--model.init_args.genotype", str(picked.run_dir), *map(str, p.final.get("args", []))], p.dir)
                for seed in p.final.get("seeds", [0])]
    if finals:
        run_stage([j for jobs in finals.values() for j in jobs], p)
        for name, jobs in finals.items():
            accs = [100 * score(j, "retrain") for j in jobs]
            result["methods"][name]["final"] = {"runs": [str(j.run_dir) for j in jobs], "test_acc": accs,
                                                "test_acc_mean_std": fmt_mean_std(mean_std(accs))}
    write_report([p.dir], p.dir / "report.html", ["run.name", "dataset"])
    (p.dir / "protocol.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_nas protocol",
                                     description="Run a reproduction protocol (searches, selection, final "
                                                 "retrainings, report) from a protocol file; rerun to resume.")
    parser.add_argument("--config", required=True, type=Path, help="the protocol file (experiments/protocols/)")
    parser.add_argument("--root", default=None, help="where the protocol's runs go (default: the file's root)")
    args = parser.parse_args(argv)
    try:
        protocol = load_protocol(args.config, args.root)
        result = run_protocol(protocol)
    except LightningNASError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, method in result["methods"].items():
        picked = method["picked"]
        best = max(s["score"] for s in method["searches"])
        tied = sorted(s["seed"] for s in method["searches"] if s["score"] == best)
        what = ("NB201 CIFAR-10 test accuracy" if result["selection_rule"] == "benchmark"
                else "retrained validation accuracy")
        percent = best if result["selection_rule"] == "benchmark" else 100 * best
        line = f"{name}: picked search seed {picked['seed']} ({picked['run']}; {what} {percent:.2f} %"
        line += (f", tied with seeds {[t for t in tied if t != picked['seed']]}: the lowest seed wins)"
                 if len(tied) > 1 else ")")
        if "final" in method:
            line += (f"; final retrainings: test accuracy {method['final']['test_acc_mean_std']} % over "
                     f"{len(method['final']['runs'])} seed(s)")
        print(line)
    print(protocol.dir / "report.html")
    return 0
