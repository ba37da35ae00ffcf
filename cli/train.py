"""``bsr train TASK --data DIR --config YAML --out RUN [--resume] [--set key=value ...]``."""

from __future__ import annotations

import os

import click

from bsrdata.errors import BsrError


@click.command("train")
@click.argument("task_name", metavar="TASK")
@click.option("--data", "data", required=True, type=click.Path(file_okay=False), help="built dataset folder")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML config (defaults if omitted)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="run folder")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a config key, e.g. train.iterations=100")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
def train(task_name, data, config, out, resume, sets, device, no_progress):
    """Train TASK (cmos, rrdb-sft, blind) on a built dataset; checkpoints and logs go to RUN."""
    from bsrdata.models.engine.config import load_user_config
    from bsrdata.models.engine.task import get_task
    from bsrdata.models.engine.trainer import train as run

    task = get_task(task_name)
    user = load_user_config(config, sets)
    user.setdefault("task", task_name)
    cfg = task.config(user, where=config or ("--set" if sets else "config"))
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        raise BsrError(f"--data {data}: no manifest.json (not a built dataset)")
    res = run(task, cfg, data, out, resume=resume, progress=not no_progress, device=device)
    if int(os.environ.get("RANK", "0")) == 0:
        rep = getattr(res.get("model"), "pretrained_report", None)
        if rep is not None:
            click.echo(f"backbone weights: {len(rep['loaded'])} tensors loaded, {len(rep['skipped'])} skipped, "
                       f"{len(rep['missing'])} left at random initialisation (see {out}/pretrained.json)")
        click.echo(f"trained {res['iterations']} iterations; checkpoint {res['checkpoint']}")
        if res.get("val"):
            from bsrdata.tables import eval_markdown as format_markdown

            click.echo(format_markdown(res["val"]))
