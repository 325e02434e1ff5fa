"""The hyperparameter search on two real uses (issue 24, item 6): search against grid, pruning against none.

    python benchmarks/bench_search.py                          # both parts, sizes below (12 min on 2 shared cores)
    python benchmarks/bench_search.py --parts lens --lens-trials 20 --lens-epochs 10
    python benchmarks/bench_search.py --dry-run                # print the commands only

Every run is a subprocess of ``train.py`` with ``cpu_threads=1`` (and ``logger=csv``), inheriting this
process's niceness (start it with ``nice -n 19`` on a shared machine).

(a) Audio, LoRA r / alpha / dropout (``conf/hparams_search/audio_lora.yaml``) against the seed's phase-2 grid
    (``conf/experiment/audio_grid.yaml``: six r/alpha points, dropout 0.05), same data (``--audio-experiment``,
    default audio_grid: the 1,200-clip embedded set) and seed (``--seed``). The search gets as many trials as
    the grid has points (``--audio-points``; default all six); its TPE sampler draws ``--tpe-startup`` random
    trials before modelling (Optuna's default, 10, would make six trials a random search). No pruner in this
    part (``hydra.sweeper.pruner=null``): both arms train every point to the end.
    - grid: ``train.py -m experiment=audio_grid +audio_grid=<points> seed=<seed> test=true``; its choice is the
      point with the best validation objective (best_val_loss, the module's monitor, minimised); its test
      metrics are that point's run at the search seed (n=1), and, with ``--final-seeds`` > 0, the chosen point
      trained again on the search's fresh seeds (1000, 1001, ...) and tested once each;
    - search: ``train.py -m hparams_search=audio_lora experiment=audio_grid seed=<seed> hydra.sweeper.n_trials=<n>``;
      its best validation objective over trials, and the test metrics of its fresh-seed runs (search_summary.json).
(b) Lens, lr / weight decay (``conf/hparams_search/lens_lr_wd.yaml``) on ``--lens-experiment`` (lens_smoke's
    data: 400/200/200 cutouts) for ``--lens-epochs`` epochs and ``--lens-trials`` trials, with its MedianPruner
    (``n_startup_trials`` / ``n_warmup_steps`` set by ``--pruner-startup`` / ``--pruner-warmup`` to fit the small
    budget) and with ``hydra.sweeper.pruner=null`` (pruning off: the sweeper uses Optuna's NopPruner and the
    pruning callback does nothing). No fresh-seed runs and no plots there (``final_seeds=0 plots=false``): the
    wall time is the trials'. With fewer trials than the sampler's random start-up (TPE: 10), both arms try the
    same points, so the arms differ only in pruning.

Reported: wall time of each command and its children's CPU time (user + system; less sensitive to other
jobs on the cores), trials by state, epochs trained, the best validation value of each arm. Everything is
recorded; nothing is asserted. Results: ``--json`` (default ``<dir>/bench_search.json``) and a markdown table on
stdout; docs/benchmarks.md, "Search against grid, pruning against none".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = ["r8_a16", "r8_a32", "r16_a32", "r16_a64", "r32_a32", "r32_a64"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], log: Path, dry: bool) -> dict:
    """One train.py command; its wall time, its children's CPU time and exit status (its output goes to `log`)."""
    print("$ " + " ".join(cmd), flush=True)
    if dry:
        return {"cmd": " ".join(cmd), "wall_s": None, "cpu_s": None, "rc": None}
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    cpu0, t0 = children_cpu(), time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    print(f"  rc={rc} wall {wall:.0f} s, CPU {cpu:.0f} s (log: {log})", flush=True)
    return {"cmd": " ".join(cmd), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rc": rc, "log": str(log)}


def jobs(sweep: Path) -> dict[int, dict]:
    """job number -> its metrics.json and the LoRA / optimiser values its config used."""
    out = {}
    for d in sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        metrics = d / "metrics.json"
        cfg_file = d / ".hydra" / "config.yaml"
        if not metrics.exists():
            out[int(d.name)] = {"metrics": None}
            continue
        cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
        out[int(d.name)] = {"metrics": json.loads(metrics.read_text()), "seed": cfg.get("seed"),
                            "lora": ((cfg.get("model") or {}).get("net") or {}).get("lora"),
                            "optimizer": {k: v for k, v in ((cfg.get("model") or {}).get("optimizer") or {}).items()
                                          if k in ("lr", "weight_decay")}}
    return out


def mean_sd(values: list[float]) -> dict:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def audio_part(args, base: Path) -> dict:
    common = [sys.executable, "train.py", "-m", f"experiment={args.audio_experiment}", f"seed={args.seed}",
              "cpu_threads=1", "logger=csv"] + (["trainer.max_epochs=%d" % args.audio_epochs] if args.audio_epochs else [])
    points = args.audio_points
    fresh = list(range(1000, 1000 + args.final_seeds))
    out: dict = {"experiment": args.audio_experiment, "seed": args.seed, "points": points, "budget": len(points),
                 "objective": args.audio_metric, "direction": "minimize", "test_metrics": args.test_metrics}

    grid_dir = base / "audio_grid"
    out["grid_run"] = run([*common, "+audio_grid=" + ",".join(points), "test=true", f"hydra.sweep.dir={grid_dir}"],
                          base / "logs" / "audio_grid.log", args.dry_run)
    search_dir = base / "audio_search"
    out["search_run"] = run([*common, "hparams_search=audio_lora", f"hydra.sweeper.n_trials={len(points)}",
                             "hydra.sweeper.pruner=null", f"hydra.sweeper.final_seeds={args.final_seeds}",
                             f"+hydra.sweeper.sampler.n_startup_trials={args.tpe_startup}",
                             f"hydra.sweep.dir={search_dir}"], base / "logs" / "audio_search.log", args.dry_run)
    if args.dry_run:
        return out

    grid = jobs(grid_dir)
    rows = [{"job": j, "lora": g["lora"], "val": g["metrics"].get(args.audio_metric),
             **{m: g["metrics"].get(m) for m in args.test_metrics}} for j, g in grid.items() if g["metrics"]]
    out["grid"] = rows
    if rows:
        best = min(rows, key=lambda r: r["val"])
        point = next(p for p in points if p == f"r{best['lora']['r']}_a{best['lora']['alpha']}")
        out["grid_choice"] = {"point": point, "job": best["job"], "val": best["val"],
                              "test_seed": {m: best[m] for m in args.test_metrics}}
        if fresh:
            fresh_dir = base / "audio_grid_fresh"
            out["grid_fresh_run"] = run([*common[:4], f"+audio_grid={point}", "seed=" + ",".join(map(str, fresh)),
                                         *common[5:], "test=true", f"hydra.sweep.dir={fresh_dir}"],
                                        base / "logs" / "audio_grid_fresh.log", False)
            fj = jobs(fresh_dir)
            out["grid_choice"]["fresh"] = {"seeds": fresh,
                                           "val": mean_sd([g["metrics"].get(args.audio_metric)
                                                           for g in fj.values() if g["metrics"]]),
                                           "test": {m: mean_sd([g["metrics"].get(m) for g in fj.values() if g["metrics"]])
                                                    for m in args.test_metrics}}
    summary_file = search_dir / "search_summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        sj = jobs(search_dir)
        out["search"] = {"trial_states": summary["trial_states"],
                         "trials": [{"trial": t["trial"], "state": t["state"], "val": t["value"], "params": t["params"]}
                                    for t in summary["trials"]],
                         "best": summary.get("best_trial")}
        final = summary.get("final")
        if final:
            out["search"]["fresh"] = {"seeds": final["seeds"], "val": mean_sd(final["val_per_seed"]),
                                      "test": {m: mean_sd([(sj.get(j) or {}).get("metrics", {}).get(m) for j in final["jobs"]])
                                               for m in args.test_metrics}}
    return out


def lens_part(args, base: Path) -> dict:
    common = [sys.executable, "train.py", "-m", "hparams_search=lens_lr_wd", f"experiment={args.lens_experiment}",
              f"seed={args.seed}", "cpu_threads=1", "logger=csv", f"trainer.max_epochs={args.lens_epochs}",
              f"hydra.sweeper.n_trials={args.lens_trials}", "hydra.sweeper.final_seeds=0", "hydra.sweeper.plots=false"]
    arms = {"pruner": [f"hydra.sweeper.pruner.n_startup_trials={args.pruner_startup}",
                       f"hydra.sweeper.pruner.n_warmup_steps={args.pruner_warmup}"],
            "no pruner": ["hydra.sweeper.pruner=null"]}
    out: dict = {"experiment": args.lens_experiment, "epochs": args.lens_epochs, "trials": args.lens_trials,
                 "pruner": f"MedianPruner(n_startup_trials={args.pruner_startup}, n_warmup_steps={args.pruner_warmup})",
                 "arms": {}}
    for name, extra in arms.items():
        sweep = base / ("lens_" + name.replace(" ", "_"))
        arm = {"run": run([*common, *extra, f"hydra.sweep.dir={sweep}"], base / "logs" / f"{sweep.name}.log", args.dry_run)}
        summary_file = sweep / "search_summary.json"
        if not args.dry_run and summary_file.exists():
            summary = json.loads(summary_file.read_text())
            js = jobs(sweep)
            arm["trial_states"] = summary["trial_states"]
            arm["best_val"] = (summary.get("best_trial") or {}).get("search_best_val")
            arm["trials"] = [{"trial": t["trial"], "state": t["state"], "val": t["value"], "params": t["params"],
                              "epochs_trained": ((js.get(t["job"]) or {}).get("metrics") or {}).get("epochs_trained")}
                             for t in summary["trials"]]
            arm["epochs_trained"] = sum(t["epochs_trained"] or 0 for t in arm["trials"])
        out["arms"][name] = arm
    return out


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def ms(s: dict | None) -> str:
    if not s or not s.get("n"):
        return "-"
    return f"{s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s.get("sd") is not None else "") + f" (n={s['n']})"


def markdown(res: dict) -> str:
    md = []
    a = res.get("audio")
    if a and "grid" in a:
        m = a["test_metrics"]
        md += [f"Audio ({a['experiment']}, seed {a['seed']}): LoRA search against the seed's grid, {a['budget']} runs each; "
               f"objective {a['objective']} (lower is better)", "",
               "| arm | runs | wall (s) | CPU (s) | choice | best val | " + " | ".join(f"{t}, seed {a['seed']} (n=1)" for t in m)
               + " | " + " | ".join(f"{t}, fresh seeds (mean ± sd)" for t in m) + " |",
               "| --- " * (6 + 2 * len(m)) + "|"]
        gc = a.get("grid_choice") or {}
        gr, gf = a["grid_run"], a.get("grid_fresh_run") or {}
        g_fresh = len((gc.get("fresh") or {}).get("seeds", []))
        md.append(f"| grid | {len(a['grid'])} (+{g_fresh} fresh) | {fmt(gr['wall_s'])} (+{fmt(gf.get('wall_s'))} fresh) | "
                  f"{fmt(gr['cpu_s'])} "
                  f"(+{fmt(gf.get('cpu_s'))}) | {gc.get('point')} (dropout 0.05) | {fmt(gc.get('val'))} | "
                  + " | ".join(fmt((gc.get('test_seed') or {}).get(t)) for t in m) + " | "
                  + " | ".join(ms(((gc.get('fresh') or {}).get('test') or {}).get(t)) for t in m) + " |")
        s = a.get("search") or {}
        best = s.get("best") or {}
        sr = a["search_run"]
        params = ", ".join(f"{k.split('.')[-1]}={fmt(v, 3)}" for k, v in (best.get("params") or {}).items())
        n_fresh = len((s.get("fresh") or {}).get("seeds", []))
        md.append(f"| search | {sum((s.get('trial_states') or {}).values())} (+{n_fresh} fresh) "
                  f"| {fmt(sr['wall_s'])} (incl. fresh) | {fmt(sr['cpu_s'])} | {params} | {fmt(best.get('search_best_val'))} | "
                  + " | ".join("-" for _ in m) + " | "
                  + " | ".join(ms(((s.get('fresh') or {}).get('test') or {}).get(t)) for t in m) + " |")
        md += ["", "Grid points (seed %d): " % a["seed"] + "; ".join(
            f"r{r['lora']['r']}/a{r['lora']['alpha']}: val {fmt(r['val'])}" for r in a["grid"]),
            "Search trials: " + "; ".join(
            f"{t['trial']}: " + "/".join(fmt(v, 3) for v in t["params"].values()) + f" -> {fmt(t['val'])} ({t['state']})"
            for t in s.get("trials", [])) + " (r/alpha/dropout)"]
        if (s.get("fresh") or {}).get("val") or (gc.get("fresh") or {}).get("val"):
            md.append(f"Fresh-seed validation {a['objective']}: grid's choice {ms((gc.get('fresh') or {}).get('val'))}, "
                      f"search's choice {ms((s.get('fresh') or {}).get('val'))}")
        md.append("")
    lens = res.get("lens")
    if lens and lens["arms"]:
        md += [f"Lens lr/wd search ({lens['experiment']} data, {lens['epochs']} epochs, {lens['trials']} trials, "
               "no fresh seeds): "
               f"{lens['pruner']} against none", "",
               "| arm | wall (s) | CPU (s) | trials (state: n) | epochs trained | best val AUROC |",
               "| --- | --- | --- | --- | --- | --- |"]
        for name, arm in lens["arms"].items():
            states = ", ".join(f"{k}: {v}" for k, v in sorted((arm.get("trial_states") or {}).items()))
            md.append(f"| {name} | {fmt(arm['run']['wall_s'])} | {fmt(arm['run']['cpu_s'])} | {states} | "
                      f"{fmt(arm.get('epochs_trained'))} | {fmt(arm.get('best_val'))} |")
        md.append("")
    return "\n".join(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=["audio", "lens"], default=["audio", "lens"])
    p.add_argument("--dir", type=Path, default=None, help="sweep directories and logs (default: multirun/bench_search/<time>)")
    p.add_argument("--json", type=Path, default=None, help="results (default: <dir>/bench_search.json)")
    p.add_argument("--seed", type=int, default=42, help="the grid's and the search's seed")
    p.add_argument("--audio-experiment", default="audio_grid")
    p.add_argument("--audio-points", nargs="+", default=GRID, choices=GRID,
                   help="grid points (conf/audio_grid/); the search's budget")
    p.add_argument("--audio-epochs", type=int, default=None, help="trainer.max_epochs (default: the experiment's, 8)")
    p.add_argument("--audio-metric", default="best_val_loss", help="the objective (the audio module's monitor, minimised)")
    p.add_argument("--test-metrics", nargs="+", default=["test_auroc", "test_loss"])
    p.add_argument("--tpe-startup", type=int, default=3, help="TPE's random start-up trials in the audio search")
    p.add_argument("--final-seeds", type=int, default=3, help="fresh seeds for the search's choice and the grid's choice")
    p.add_argument("--lens-experiment", default="lens_smoke")
    p.add_argument("--lens-trials", type=int, default=6)
    p.add_argument("--lens-epochs", type=int, default=5)
    p.add_argument("--pruner-startup", type=int, default=2, help="MedianPruner n_startup_trials (lens_lr_wd.yaml: 5)")
    p.add_argument("--pruner-warmup", type=int, default=1, help="MedianPruner n_warmup_steps, in epochs (lens_lr_wd.yaml: 2)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args()

    base = args.dir or ROOT / "multirun" / "bench_search" / time.strftime("%Y-%m-%d_%H-%M-%S")
    base.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:], "dir": str(base), "cpu_count": os.cpu_count(),
                 "nice": os.nice(0)}
    json_path = args.json or base / "bench_search.json"
    for part in args.parts:
        t0 = time.monotonic()
        res[part] = audio_part(args, base) if part == "audio" else lens_part(args, base)
        res[part]["part_wall_s"] = round(time.monotonic() - t0, 1)
        if not args.dry_run:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(res, indent=1, default=str))
    if not args.dry_run:
        print(f"\nresults: {json_path}\n")
        print(markdown(res))


if __name__ == "__main__":
    main()
