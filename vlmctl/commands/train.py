"""`vlmctl train`: check the config set, then launch the training run through accelerate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmctl.commands._options import ConfigDirArg, OverridesOpt


def train(
    directory: ConfigDirArg = Path("."),
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Run folder. Default: outputs/<config folder>."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="'auto' = the newest checkpoint-N of the output folder (start fresh if none), "
            "or a checkpoint folder.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete a previous run in the output folder.")
    ] = False,
    overrides: OverridesOpt = None,
    num_processes: Annotated[
        int | None,
        typer.Option(
            "--num-processes",
            "-n",
            help="Processes per machine (usually GPUs per machine). >1 = data parallel.",
        ),
    ] = None,
    num_machines: Annotated[int, typer.Option("--num-machines", help="Machines (nodes).")] = 1,
    machine_rank: Annotated[
        int, typer.Option("--machine-rank", help="This machine's index (0 = main).")
    ] = 0,
    main_process_ip: Annotated[
        str | None, typer.Option("--main-process-ip", help="Address of machine 0.")
    ] = None,
    main_process_port: Annotated[
        int | None, typer.Option("--main-process-port", help="Port on machine 0 (29500).")
    ] = None,
    accelerate_config: Annotated[
        str | None,
        typer.Option(
            "--accelerate-config",
            help="Preset (single_gpu, multi_gpu, fsdp2, zero2, zero3, cpu, cpu_ddp) or a path "
            "to your own accelerate config file. Default: single_gpu / cpu for one process, "
            "multi_gpu / cpu_ddp for more.",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model id or folder (overrides the config).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Dataset file, folder or hub id (overrides the config)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check, print the launch command, run nothing.")
    ] = False,
) -> None:
    """Fine-tune: checks the config set first, then runs accelerate + TRL. Exit code = the
    run's (0 done, 1 error, 143/130 stopped by SIGTERM/Ctrl-C with a checkpoint saved)."""
    from vlmctl.extras import require

    require("train")
    from vlmctl.training.run import TrainRequest
    from vlmctl.training.run import train as run_train

    code = run_train(
        TrainRequest(
            config_dir=directory,
            output_dir=output_dir,
            resume=resume,
            overwrite=overwrite,
            overrides=list(overrides or []),
            num_processes=num_processes,
            num_machines=num_machines,
            machine_rank=machine_rank,
            main_process_ip=main_process_ip,
            main_process_port=main_process_port,
            accelerate_config=accelerate_config,
            model=model,
            dataset=dataset,
            dry_run=dry_run,
        )
    )
    raise typer.Exit(code)
