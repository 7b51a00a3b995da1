"""``report --wandb PROJECT``: a W&B Report comparing the groups, built with wandb-workspaces (the maintained
Reports API): the Markdown summary table, then one panel grid over the report's runs (selected by the ``run.dir``
config key every lightning_nas run logs), grouped by the report's grouping, with line plots of the curves (mean
and min-max band per group). Needs a W&B login; offline it says so and uploads nothing.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from lightning_nas.errors import LightningNASError
from lightning_nas.reporting.runs import CURVES

#: our grouping keys as W&B config keys (the CLI logs the resolved config flattened with dots)
WANDB_KEYS = {"method": "config.model.class_path", "dataset": "config.data.init_args.dataset",
              "space": "config.model.init_args.supernet.class_path"}


def check_login() -> None:
    """Refuse clearly, before any upload, when W&B is offline or not logged in."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise LightningNASError(f"report --wandb needs W&B online, but WANDB_MODE={os.environ['WANDB_MODE']}: unset "
                                "it and log in (`wandb login` or WANDB_API_KEY); the HTML report needs neither")
    import wandb

    if not wandb.login(prompt=False):
        raise LightningNASError("report --wandb needs a W&B login: run `wandb login` (or set WANDB_API_KEY) and "
                                "try again; the HTML report needs none")


def create_report(run_dirs: list[str], group_by: list[str], markdown: str, project: str,
                  entity: Optional[str] = None) -> str:
    """Save the W&B Report and return its URL."""
    check_login()
    import wandb_workspaces.reports.v2 as wr

    dirs = ", ".join(repr(d) for d in run_dirs)
    runset = wr.Runset(entity=entity or "", project=project, name="lightning_nas runs",
                       filters=f"Config('run.dir') in [{dirs}]",
                       groupby=[WANDB_KEYS.get(k, f"config.{k}") for k in group_by])
    panels: list[Any] = [wr.LinePlot(title=title, x="epoch", y=[key], groupby_aggfunc="mean",
                                     groupby_rangefunc="minmax") for key, title in CURVES if key != "skip_connections"]
    kwargs = {"entity": entity} if entity else {}
    report = wr.Report(project=project, title="lightning_nas comparison report", **kwargs,
                       description=f"{len(run_dirs)} runs grouped by {' x '.join(group_by)}",
                       blocks=[wr.MarkdownBlock(text=markdown), wr.PanelGrid(runsets=[runset], panels=panels)])
    report.save()
    return report.url
