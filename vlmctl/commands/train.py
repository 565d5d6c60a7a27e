"""`vlmctl train`: check the config set, then launch the training run through accelerate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmctl.commands._options import ConfigDirArg, OverridesOpt

# The command's own arguments and options (shared ones are in _options.py).
OutputDirOpt = Annotated[
    Path | None,
    typer.Option("--output-dir", "-o", help="Run folder. Default: outputs/<config folder>."),
]

ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="'auto' = the newest checkpoint-N of the output folder (start fresh if none), "
        "or a checkpoint folder.",
    ),
]

OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Delete a previous run in the output folder.")
]

NumProcessesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-processes",
        "-n",
        help="Processes per machine (usually GPUs per machine). >1 = data parallel.",
    ),
]

NumMachinesOpt = Annotated[int, typer.Option("--num-machines", help="Machines (nodes).")]

MachineRankOpt = Annotated[
    int, typer.Option("--machine-rank", help="This machine's index (0 = main).")
]

MainProcessIpOpt = Annotated[
    str | None, typer.Option("--main-process-ip", help="Address of machine 0.")
]

MainProcessPortOpt = Annotated[
    int | None, typer.Option("--main-process-port", help="Port on machine 0 (29500).")
]

AccelerateConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--accelerate-config",
        help="Preset (single_gpu, multi_gpu, fsdp2, zero2, zero3, cpu, cpu_ddp) or a path "
        "to your own accelerate config file. Default: single_gpu / cpu for one process, "
        "multi_gpu / cpu_ddp for more.",
    ),
]

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model id or folder (overrides the config).")
]

DatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset file, folder or hub id (overrides the config)."),
]

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Check, print the launch command, run nothing.")
]


def train(
    directory: ConfigDirArg = Path("."),
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
    overrides: OverridesOpt = None,
    num_processes: NumProcessesOpt = None,
    num_machines: NumMachinesOpt = 1,
    machine_rank: MachineRankOpt = 0,
    main_process_ip: MainProcessIpOpt = None,
    main_process_port: MainProcessPortOpt = None,
    accelerate_config: AccelerateConfigOpt = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Fine-tune: checks the config set first, then runs accelerate + TRL. Exit code = the
    run's (0 done, 1 error, 143/130 stopped by SIGTERM/Ctrl-C with a checkpoint saved)."""
    from vlmctl.extras import require

    require("train")
    from vlmctl.training.parent import TrainRequest
    from vlmctl.training.parent import train as run_train

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
