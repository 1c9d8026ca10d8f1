"""The ``ptm`` command: parses flags and calls plain functions.

Only typer and the light ``ptmcli.cli.*`` modules are imported here; torch and
the tokenizer libraries are imported inside the commands, so ``ptm --help``
stays instant.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

import typer

from ptmcli import __version__
from ptmcli.cli import (
    compress,
    convert,
    distill,
    eval_cmd,
    extract_features,
    finetune,
    generate,
    info,
    plot,
    predict,
    pretrain,
    tokenize,
)

EXAMPLES = """Examples:

ptm pretrain -o runs/sample                                   # a small BERT on the bundled Wikipedia sample

ptm tokenize train corpus.txt --model wordpiece --vocab-size 30000 -o tok/ && ptm tokenize encode corpus.txt -t tok/ -o shards/

ptm pretrain --arch gpt --data shards/ -o runs/gpt --precision bf16

ptm finetune --checkpoint runs/gpt --task classification --train sst2/train.tsv --dev sst2/dev.tsv -o runs/sst2

ptm extract-features -c hf-sentence-model/ sentences.txt -o vectors.npy

ptm convert runs/sst2 hf-sst2/ --to hf

Each command's --help has more; --debug after any command shows tracebacks."""

app = typer.Typer(
    name="ptm",
    help="Pretrain, finetune and use language models: ELMo, GPT, BERT and kin.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)

app.add_typer(tokenize.app, name="tokenize")
app.command("pretrain", help=pretrain.HELP, short_help=pretrain.SHORT_HELP, epilog=pretrain.EPILOG)(pretrain.pretrain)
app.command("finetune", help=finetune.HELP, short_help=finetune.SHORT_HELP, epilog=finetune.EPILOG)(finetune.finetune)
app.command("distill", help=distill.HELP, short_help=distill.SHORT_HELP, epilog=distill.EPILOG)(distill.distill)
app.command("extract-features", help=extract_features.HELP, short_help=extract_features.SHORT_HELP)(extract_features.extract_features)
app.command("eval", help=eval_cmd.HELP, short_help=eval_cmd.SHORT_HELP)(eval_cmd.eval_command)
app.command("predict", help=predict.HELP, short_help=predict.SHORT_HELP)(predict.predict)
app.command("generate", help=generate.HELP, short_help=generate.SHORT_HELP)(generate.generate)
app.command("convert", help=convert.HELP, short_help=convert.SHORT_HELP)(convert.convert)
app.command("compress", help=compress.HELP, short_help=compress.SHORT_HELP)(compress.compress)
app.command("info", help=info.HELP, short_help=info.SHORT_HELP)(info.info)
app.command("plot", help=plot.HELP, short_help=plot.SHORT_HELP)(plot.plot)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ptm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors (also accepted after any subcommand)."),
) -> None:
    """Pretrain, finetune and use language models: ELMo, GPT, BERT and kin."""


# Commands that use every torchrun process (training, and encoding a share of the input
# each); the others run once, on rank 0.
DISTRIBUTED_COMMANDS = ("pretrain", "finetune", "tokenize encode")


def _runs_on_rank_zero_only(args: list[str]) -> bool:
    """Under torchrun, ranks other than 0 leave a single-process command to rank 0 (one writer, one output)."""
    from ptmcli.errors import PtmError
    from ptmcli.training.launch import from_torchrun_env

    try:
        launch = from_torchrun_env()
    except PtmError:
        return False  # the command itself reports the bad environment
    words = [a for a in args if not a.startswith("-")][:2]
    distributed = bool(words) and (words[0] in DISTRIBUTED_COMMANDS or " ".join(words) in DISTRIBUTED_COMMANDS)
    return launch.enabled and not launch.is_main and not distributed


# Commands that have closed and renamed every output when they return, so the process may end
# at once: tearing down torch's modules and C++ state at exit takes about half a second.
EXIT_WITHOUT_TEARDOWN = ("extract-features",)


def _exit_without_teardown(code: int) -> None:
    """End the process now, as a normal exit would but without the interpreter's teardown.

    Returns instead, for the normal exit, while a thread that exit would wait for still runs.
    """
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # what the interpreter would run: temporary files, process pools, logging
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line and exit 2 for user errors, unless --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("PTM_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    if debug:
        os.environ["PTM_DEBUG"] = "1"
    if _runs_on_rank_zero_only(args):
        return
    from typer._click import exceptions as click_errors

    from ptmcli.errors import PtmError

    try:
        code = app(args=args, prog_name="ptm", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
        words = [a for a in args if not a.startswith("-")]
        # Only as the process's entry point (argv None): a caller in the same process goes on.
        if argv is None and words and words[0] in EXIT_WITHOUT_TEARDOWN and "torch" in sys.modules:
            _exit_without_teardown(0)
    except SystemExit as stop:
        # click ends a command whose stdout reader went away (EPIPE) with status 1, after wrapping
        # stdout; like other Unix tools, a closed pipe downstream (`| head`) is not an error.
        if stop.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _silence_stdout()
            sys.exit(0)
        raise
    except click_errors.UsageError as err:
        # A bad flag or flag value: one line, like every other user error (`--help` shows the usage).
        if debug:
            raise
        if not err.format_message() and err.ctx is not None:  # `ptm` or `ptm tokenize` alone: show the help
            print(err.ctx.get_help(), file=sys.stderr)
            sys.exit(2)
        where = err.ctx.command_path if err.ctx is not None else "ptm"
        print(f"ptm: error: {where}: {err.format_message()} (see '{where} --help')", file=sys.stderr)
        sys.exit(2)
    except click_errors.ClickException as err:
        if debug:
            raise
        print(f"ptm: error: {err.format_message()}", file=sys.stderr)
        sys.exit(err.exit_code)
    except typer.Abort:
        print("ptm: interrupted", file=sys.stderr)
        sys.exit(130)
    except PtmError as err:
        if debug:
            raise
        print(f"ptm: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("ptm: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # A downstream `head` closed the pipe: not an error in a shell pipeline.
        _silence_stdout()
        sys.exit(0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit cannot raise on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
