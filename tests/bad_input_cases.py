"""The bad-input sweep (issue: refuse every bad input cleanly): each case is a `fit` command line that must end
with exit code 2, one message naming the problem (the expected text), no traceback and no config dump.

``python tests/bad_input_cases.py`` prints the table of cases and the first line of each message.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "experiments" / "tiny" / "darts_first_order.yaml")
TINY_NB201 = str(REPO / "experiments" / "tiny" / "darts_nb201.yaml")
TINY_SP = str(REPO / "experiments" / "tiny" / "single_path_nb201.yaml")
TINY_REA = str(REPO / "experiments" / "tiny" / "rea_nb201.yaml")
TINY_RETRAIN = str(REPO / "experiments" / "tiny" / "retrain.yaml")
TINY_DISTILL = str(REPO / "experiments" / "tiny" / "distill_nb201.yaml")
TINY_MFKD = str(REPO / "experiments" / "tiny" / "mfkd_nb201.yaml")
TINY_BO = str(REPO / "experiments" / "tiny" / "bo_nb201.yaml")
TINY2 = str(REPO / "experiments" / "tiny" / "darts_second_order.yaml")
TINY_PC = str(REPO / "experiments" / "tiny" / "pc_darts_nb201.yaml")
TINY_DRNAS = str(REPO / "experiments" / "tiny" / "drnas_nb201.yaml")
TINY_SNAS = str(REPO / "experiments" / "tiny" / "snas_nb201.yaml")
TINY_GDAS = str(REPO / "experiments" / "tiny" / "gdas.yaml")
TINY_BETA = str(REPO / "experiments" / "tiny" / "beta_darts_nb201.yaml")
TINY_PT = str(REPO / "experiments" / "tiny" / "darts_pt_nb201.yaml")
M, D, T = "--model.init_args.", "--data.init_args.", "--trainer."
UNKNOWN_OP = ("Genotype(normal=[('conv_9x9', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
              "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
              "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
              "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
              "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def prepare(tmp: Path) -> None:
    """The files the cases name (``{tmp}`` in their arguments)."""
    (tmp / "bad.yaml").write_text("trainer:\n  max_epochs: [1\n")
    (tmp / "empty.yaml").write_text("")
    (tmp / "bad.tar.gz").write_bytes(b"not an archive")
    (tmp / "text.ckpt").write_text("not a checkpoint")
    (tmp / "empty_folder").mkdir(exist_ok=True)
    (tmp / "a_file").write_text("")
    from PIL import Image

    for split in ("train", "test"):  # one class only
        (tmp / "one_class" / split / "cat").mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp / "one_class" / split / "cat" / f"{i}.png")


def _cases() -> list[tuple[str, list[str], str]]:
    tmp = Path("{tmp}")
    c = ["--config", TINY]
    return [
        ("unknown key", [*c, f"{M}learning_rate", "0.1"], "learning_rate"),
        ("wrong type", [*c, f"{T}max_epochs", "many"], "max_epochs"),
        ("YAML syntax error", ["--config", str(tmp / "bad.yaml")], "not valid YAML"),
        ("empty config", ["--config", str(tmp / "empty.yaml")], "empty"),
        ("missing config file", ["--config", str(tmp / "nope.yaml")], "nope.yaml"),
        ("unknown method class", [*c, "--model.class_path", "lightning_nas.methods.Nope"], "Nope"),
        ("unknown dataset", [*c, f"{D}dataset", "cifar11"], "cifar11"),
        ("missing image folder", [*c, f"{D}dataset", "image_folder", f"{D}data_dir", str(tmp / "missing")],
         "missing"),
        ("empty image folder", [*c, f"{D}dataset", "image_folder", f"{D}data_dir", str(tmp / "empty_folder")],
         "empty_folder"),
        ("single-class image folder", [*c, f"{D}dataset", "image_folder", f"{D}data_dir", str(tmp / "one_class")],
         "at least two classes"),
        ("corrupt archive", [*c, f"{D}dataset", "image_folder", f"{D}data_dir", str(tmp / "bad.tar.gz")],
         "bad.tar.gz"),
        ("negative weight lr", [*c, f"{M}weight_optimizer.init_args.lr", "-1"], "Invalid learning rate"),
        ("negative arch lr", [*c, f"{M}arch_optimizer.init_args.lr", "-1"], "Invalid learning rate"),
        ("weight lr 1e6 (diverges)", [*c, f"{M}weight_optimizer.init_args.lr", "1e6", f"{M}grad_clip", "0"],
         "training diverged"),
        ("batch size 0", [*c, f"{D}batch_size", "0"], "data.batch_size"),
        ("eval batch size 0", [*c, f"{D}eval_batch_size", "0"], "data.eval_batch_size"),
        ("images resident on 'gpu'", [*c, f"{D}resident", "gpu"], "resident"),
        ("max_epochs 0", [*c, f"{T}max_epochs", "0"], "trainer.max_epochs 0 trains nothing"),
        ("max_steps 0", [*c, f"{T}max_steps", "0"], "trainer.max_steps 0 trains nothing"),
        ("channels 0", [*c, f"{M}supernet.init_args.channels", "0"], "channels=0"),
        ("layers 0", [*c, f"{M}supernet.init_args.layers", "0"], "layers >= 3"),
        ("one layer", [*c, f"{M}supernet.init_args.layers", "1"], "layers >= 3"),
        ("train_portion 0", [*c, f"{D}train_portion", "0"], "train_portion"),
        ("train_portion 1.5", [*c, f"{D}train_portion", "1.5"], "train_portion"),
        ("image_size 3", [*c, f"{D}image_size", "3"], "data.image_size"),
        ("image_size 0", [*c, f"{D}image_size", "0"], "data.image_size"),
        ("max_train_samples 0", [*c, f"{D}max_train_samples", "0"], "max_train_samples"),
        ("negative max_epochs", [*c, f"{T}max_epochs", "-3"], "max_epochs"),
        ("negative grad_clip", [*c, f"{M}grad_clip", "-1"], "grad_clip"),
        ("negative hvp_epsilon", [*c, f"{M}hvp_epsilon", "-1"], "hvp_epsilon"),
        ("order 3", [*c, f"{M}order", "3"], "order"),
        ("warmup past the end", [*c, f"{M}warmup_epochs", "5"], "warmup_epochs"),
        ("unknown primitive", [*c, f"{M}supernet.init_args.primitives", "[none, conv_9x9]"], "conv_9x9"),
        ("Adam with order 2", [*c, f"{M}order", "2", f"{M}weight_optimizer", "torch.optim.Adam"], "order 2"),
        ("unknown retrain genotype op", ["--config", TINY_RETRAIN, f"{M}genotype", UNKNOWN_OP], "conv_9x9"),
        ("missing --ckpt_path", [*c, "--ckpt_path", str(tmp / "missing.ckpt")], "does not exist"),
        ("text as --ckpt_path", [*c, "--ckpt_path", str(tmp / "text.ckpt")], "truncated or corrupt"),
        ("unwritable run root", [*c, "--run.root", str(tmp / "a_file" / "runs")], "a_file"),
        ("gpu on a CPU host", [*c, f"{T}accelerator", "gpu"], "gpu"),
        ("limit_train_batches 0", [*c, f"{T}limit_train_batches", "0"], "limit_train_batches"),
        ("checkpoint_every_n_steps 0", [*c, "--run.checkpoint_every_n_steps", "0"], "checkpoint_every_n_steps"),
        ("finite_check_every 0", [*c, "--run.finite_check_every", "0"], "finite_check_every"),
        ("REA population > budget", ["--config", TINY_REA, f"{M}population_size", "1000"], "budget"),
        ("single path: 0 candidates", ["--config", TINY_SP, f"{M}candidates", "0"], "candidates"),
        ("single path: unknown bn_mode", ["--config", TINY_SP, f"{M}bn_mode", "frozen"], "bn_mode"),
        ("NA-RS: negative neighbours", ["--config", TINY_SP, f"{M}neighbours", "-1"], "neighbours"),
        ("DI-NAS: projector not a projector", ["--config", TINY_SP, f"{M}projector", "torch.nn.Identity"],
         "GradientProjector"),
        ("benchmark callback on the DARTS space", [*c, f"{T}callbacks",
                                                   "[{class_path: lightning_nas.callbacks.BenchmarkAccuracy}]"],
         "NAS-Bench-201"),
        ("unknown benchmark dataset", ["--config", TINY_NB201, f"{T}callbacks", "[{class_path: lightning_nas."
                                       "callbacks.BenchmarkAccuracy, init_args: {datasets: [imagenet]}}]"],
         "imagenet"),
        ("disturbance probe on a bilevel method", [*c, f"{T}callbacks",
                                                   "[{class_path: lightning_nas.callbacks.DisturbanceProbe}]"],
         "SinglePathSearch"),
        ("landscape slice along alpha of a retraining",
         ["--config", TINY_RETRAIN, f"{T}callbacks",
          "[{class_path: lightning_nas.callbacks.LossLandscapeSlice, init_args: {target: alpha}}]"],
         "no architecture parameters"),
        ("landscape slice on the single-path search", ["--config", TINY_SP, f"{T}callbacks",
                                                       "[{class_path: lightning_nas.callbacks.LossLandscapeSlice}]"],
         "retrain the picked cell"),
        ("landscape slice without the centre on its grid", [*c, f"{T}callbacks", "[{class_path: lightning_nas."
                                                            "callbacks.LossLandscapeSlice, init_args: {points: 4}}]"],
         "points must be odd"),
        ("landscape slice whose centre is off its grid",
         [*c, f"{T}callbacks",
          "[{class_path: lightning_nas.callbacks.LossLandscapeSlice, init_args: {span: [-0.5, 1]}}]"],
         "span must be symmetric"),
        ("unknown run.monitor", [*c, "--run.monitor", "val/accuracy", f"{T}max_epochs", "1"], "val/accuracy"),
        ("KD without a teacher", ["--config", TINY_DISTILL], "set model.teacher"),
        ("KD teacher file missing", ["--config", TINY_DISTILL, f"{M}teacher", str(tmp / "missing.ckpt")],
         "teacher_nb201_cifar10.yaml"),
        ("KD teacher not a checkpoint", ["--config", TINY_DISTILL, f"{M}teacher", str(tmp / "text.ckpt")],
         "cannot be read"),
        ("KD alpha 2", ["--config", TINY_DISTILL, f"{M}loss.init_args.alpha", "2"], "alpha in [0, 1]"),
        ("unknown NB201 op in a trained cell", ["--config", TINY_DISTILL, f"{M}arch",
                                                "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "conv_9x9"),
        ("MF-KD budget below one high-fidelity evaluation", ["--config", TINY_MFKD, f"{M}budget_epochs", "5"],
         "raise model.budget_epochs"),
        ("MF-KD without images", ["--config", TINY_MFKD, f"{D}dataset", "null"], "set data.init_args.dataset"),
        ("BO initial points > budget", ["--config", TINY_BO, f"{M}initial_points", "20"], "initial_points"),
        # the baselines' options (issue 23)
        ("PC-DARTS K not dividing the channels", ["--config", TINY_PC, f"{M}supernet.init_args.partial_channels", "3"],
         "partial_channels"),
        ("DrNAS unknown anchor", ["--config", TINY_DRNAS, f"{M}reg_type", "l1"], "reg_type"),
        ("DrNAS second anchor as weight decay", ["--config", TINY_DRNAS, f"{M}arch_optimizer.init_args.weight_decay",
                                                 "0.001"], "weight_decay"),
        ("SNAS unknown levels", ["--config", TINY_SNAS, f"{M}levels", "three"], "levels"),
        ("SNAS tau_min above tau_max", ["--config", TINY_SNAS, f"{M}tau_min", "20"], "tau_min"),
        ("GDAS unknown genotype rule", ["--config", TINY_GDAS, f"{M}genotype_rule", "best"], "genotype_rule"),
        ("beta-DARTS schedule shift 2", ["--config", TINY_BETA, f"{M}lr_schedule_shift", "2"], "lr_schedule_shift"),
        ("DARTS-PT epochs not the schedule's", ["--config", TINY_PT, f"{T}max_epochs", "4"],
         "set trainer.max_epochs 11"),
        ("DARTS-PT init_from missing", ["--config", TINY_PT, f"{M}init_from", str(tmp / "missing.ckpt")],
         "does not exist"),
        ("DARTS-PT init_from not a checkpoint", ["--config", TINY_PT, f"{M}init_from", str(tmp / "text.ckpt")],
         "cannot be read"),
        ("DARTS-PT second order", ["--config", TINY_PT, f"{M}order", "2"], "order 1"),
        ("DrNAS stages of different lengths", ["--config", TINY_DRNAS, f"{M}stage_epochs", "[1, 1]",
                                               f"{M}stage_partial_channels", "[1]", f"{M}stage_keep", "[5, 3]"],
         "one entry per stage"),
        ("DrNAS first stage not the supernet", ["--config", TINY_DRNAS, f"{M}stage_epochs", "[1, 1]",
                                                f"{M}stage_partial_channels", "[2, 1]", f"{M}stage_keep", "[5, 3]"],
         "first stage must be the supernet as built"),
        ("DrNAS stage epochs not max_epochs", ["--config", TINY_DRNAS, f"{M}stage_epochs", "[1, 2]",
                                               f"{M}stage_partial_channels", "[1, 1]", f"{M}stage_keep", "[5, 3]"],
         "set trainer.max_epochs 3"),
        ("Lightning's --ckpt_path last", ["--config", TINY, "--ckpt_path", "last"], "would start a fresh run"),
        ("official unroll with dampening", ["--config", TINY2, f"{M}unroll", "official",
                                            f"{M}weight_optimizer.init_args.dampening", "0.1"], "dampening"),
        ("unknown unroll", ["--config", TINY2, f"{M}unroll", "nesterov"], "unroll"),
    ]


#: (name, arguments after `fit` with ``{tmp}`` for the prepared folder, text the message must contain)
CASES = _cases()
#: cases that ran before failing: their run directory (logs, the last checkpoint) is kept on purpose
RAN = ("weight lr 1e6 (diverges)", "unknown run.monitor")


def resolve(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


def run(args: list[str], root: Path) -> tuple[int, str]:
    """``python -m lightning_nas fit ARGS --run.root ROOT`` in this process: (exit code, stderr)."""
    from lightning_nas.cli import main

    if "--run.root" not in args:
        args = [*args, "--run.root", str(root)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["fit", *args])
        except SystemExit as exc:  # jsonargparse's own errors
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - a traceback is exactly what the sweep reports
            import traceback

            traceback.print_exc(file=err)
            code = 1
    return code, err.getvalue()


def first_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(("error", "stopped", "usage"))
             or "Traceback" in line]
    line = next((x for x in lines if not x.startswith("usage")), lines[0] if lines else "")
    return line[:400]


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prepare(tmp)
        print("| bad input | exit | message (first line) |\n| --- | --- | --- |")
        for name, args, _ in CASES:
            code, stderr = run(resolve(args, tmp), tmp / "runs")
            print(f"| {name} | {code} | {first_line(stderr).replace('|', '/')} |", flush=True)
