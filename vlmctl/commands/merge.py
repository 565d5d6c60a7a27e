"""`vlmctl merge`: fold a trained LoRA adapter into its base model, ready to serve."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

# The command's own arguments and options (shared ones are in _options.py).
SourceArg = Annotated[
    Path,
    typer.Argument(
        help="Run folder written by `vlmctl train` (or any PEFT adapter folder).",
        show_default=False,
    ),
]

BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        help="Base model id or folder (default: the run manifest, else adapter_config.json).",
    ),
]

OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Output folder (default: <RUN_DIR>/merged)."),
]

DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="bf16 | fp16 | fp32 (default: the training dtype)."),
]

VerifyOpt = Annotated[
    bool,
    typer.Option(
        "--verify/--no-verify",
        help="Compare adapter and merged model on probe inputs; write merge-report.json.",
    ),
]

LowMemoryOpt = Annotated[
    bool,
    typer.Option(
        "--low-memory",
        help="Stream the base checkpoint tensor by tensor (never the whole model in memory).",
    ),
]

ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing output folder (atomically).")
]

TrustRemoteCodeOpt = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Allow the base model's own code to run."),
]

AllowNoopOpt = Annotated[
    bool,
    typer.Option("--allow-noop", help="Write the output even when the adapter changes nothing."),
]

MaxShardSizeOpt = Annotated[
    str, typer.Option("--max-shard-size", help="Largest safetensors shard, e.g. 5GB.")
]


def merge(
    source: SourceArg,
    base: BaseOpt = None,
    output: OutputOpt = None,
    dtype: DtypeOpt = None,
    verify: VerifyOpt = True,
    low_memory: LowMemoryOpt = False,
    force: ForceOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_noop: AllowNoopOpt = False,
    max_shard_size: MaxShardSizeOpt = "5GB",
) -> None:
    """Merge an adapter into its base model: sharded safetensors + the training processor.

    Writes atomically (an interrupted merge leaves nothing at the output), verifies the merged
    model against the adapter model, and refuses an adapter that changes nothing.
    """
    from rich.console import Console

    from vlmctl.extras import require

    require("merge")
    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge
    from vlmctl.merge.verify import MergeVerifyError

    console = Console(stderr=True)
    opts = MergeOptions(
        source=source,
        base=base,
        output=output,
        dtype=dtype,
        verify=verify,
        low_memory=low_memory,
        force=force,
        trust_remote_code=trust_remote_code,
        allow_noop=allow_noop,
        max_shard_size=max_shard_size,
    )
    # SIGTERM unwinds like Ctrl-C, so the temporary folder is removed on the way out.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run_merge(opts, log=lambda m: console.print(m, markup=False, highlight=False))
    except MergeVerifyError as exc:
        print_report(exc.report, Console())
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_report(result.report, Console())
    Console().print(f"merged model written to {result.output}", markup=False, highlight=False)


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def print_report(report: dict, console) -> None:
    """The verify figures as a table (what merge-report.json holds)."""
    from rich.table import Table

    verify = report.get("verify")
    if not verify:
        console.print("verify skipped (--no-verify)")
        return
    table = Table(title=f"merge verify ({verify['probes']} probes: {verify['probe_source']})")
    table.add_column("comparison")
    table.add_column("max |Δlogit|", justify="right")
    table.add_column("top-1 agreement", justify="right")
    table.add_column("tokens", justify="right")
    for key, label in (
        ("adapter_vs_merged", "adapter vs merged"),
        ("merged_vs_base", "merged vs base"),
        ("adapter_vs_base", "adapter vs base"),
    ):
        fig = verify[key]
        table.add_row(
            label,
            f"{fig['max_abs_dlogit']:.3g}",
            f"{fig['top1_agreement']:.1%}",
            str(fig["tokens"]),
        )
    console.print(table)
    status = "passed" if verify["passed"] else "FAILED"
    console.print(f"verify {status} ({report['dtype']}, {report['mode']})")
    change = verify.get("change_vs_base")
    if change:
        d, bound = change["max_abs_dlogit"], change["bf16_rounding"]
        if change["within_bf16_rounding"] and not report.get("noop"):
            console.print(
                f"[yellow]note: the adapter has not measurably changed the model: max |Δlogit| "
                f"vs the base {d:.3g} is within bf16 rounding of the logits ({bound:.3g}); "
                "train for more steps or with a higher learning rate[/]"
            )
        elif not report.get("noop"):
            console.print(f"adapter vs base: max |Δlogit| {d:.3g} (bf16 rounding {bound:.3g})")
    if report.get("noop"):
        console.print("[bold red]WARNING: the adapter changes nothing (merged == base)[/]")
