"""``train_model``: train, calibrate and evaluate a read model, then register it as a candidate.

A thin front end over ``inference.model.training``: the options are that module's, progress goes to
stdout line by line, and the result is registered (``inference.registry.register_trained``) unless
``--no-register``. The registry is imported only when it is needed, so training alone touches no database.

    python manage.py train_model --phantoms 20000 --output /tmp/model --name my-model --version 1.0.0
    python manage.py train_model --folder /data/labelled --output /tmp/real --name thorax --version 0.1.0
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.model.training import add_arguments, options_from_args, train
from xcaliber.lib.problems import Conflict

_DJANGO_OPTIONS = {
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


class Command(BaseCommand):
    help = "Train a read model on phantoms or a labelled folder; write weights, model card and plots."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # ``--version`` names the model version here; Django's own --version (print Django's version)
        # yields to it rather than making argparse refuse the second definition.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)
        parser.add_argument(
            "--no-register", action="store_true", help="only write the output folder; touch no database"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        train_options = options_from_args(argparse.Namespace(**options), _command_line(options))
        if not options["no_register"]:
            # Refuse a taken name and version before a run that may take an hour, not after it.
            from inference.registry import model_version_name_free  # late: training alone needs no database

            try:
                model_version_name_free(name=train_options.name, version=train_options.version)
            except Conflict as taken:
                raise CommandError(str(taken)) from None
        try:
            result = train(train_options, progress)
        except ValueError as error:
            raise CommandError(str(error)) from error
        if options["no_register"]:
            self.stdout.write(f"not registered (--no-register): {result.output_dir}")
            return
        from inference.registry import register_trained

        version = register_trained(result)
        self.stdout.write(self.style.SUCCESS(f"registered {version} as a candidate"))


def _command_line(options: dict[str, Any]) -> str:
    """The command as typed when run from a shell; otherwise (``call_command``) an equivalent line
    spelled out from every training option, so the card always says how to repeat the run."""
    if sys.argv[1:2] == ["train_model"]:
        return shlex.join(["python", "manage.py", *sys.argv[1:]])
    words = ["python", "manage.py", "train_model"]
    for key, value in sorted(options.items()):
        if key in _DJANGO_OPTIONS or value is None or value is False or value == []:
            continue
        flag = "--version" if key == "model_version" else "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list | tuple):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
