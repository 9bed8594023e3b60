"""``model_versions``: list the registry, activate or retire a version (the platform operator's side of
``POST /api/v1/models/<id>/activate/`` and ``.../retire/``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference import registry, selectors


class Command(BaseCommand):
    help = "List model versions, or activate / retire one (by id or name@version)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("list", "activate", "retire", "install-builtin"))
        parser.add_argument("version", nargs="?", help="id or name@version (activate, retire)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            for version in selectors.model_version_list():
                findings = (version.metrics or {}).get("findings", {})
                aurocs = [m.get("auroc") for m in findings.values() if m.get("auroc") is not None]
                low = f"min AUROC {min(aurocs):.3f}" if aurocs else "no metrics"
                self.stdout.write(
                    f"{version.id}  {version.label:<28} {version.status:<9} "
                    f"{'/'.join(version.species)} {'/'.join(version.body_regions)}  {low}"
                )
            return
        if action == "install-builtin":
            for version in registry.model_versions_install_builtin():
                self.stdout.write(f"{version.label}: {version.status}")
            return
        if not options["version"]:
            raise CommandError(f"{action} needs a version: an id or name@version")
        found = registry.find_model_version(options["version"])
        if found is None:
            raise CommandError(f"no model version {options['version']!r}")
        version = found
        if action == "activate":
            retired = registry.model_version_activate(version=version, changed_by="manage.py model_versions")
            self.stdout.write(f"activated {version.label}; retired {[r.label for r in retired] or 'none'}")
        else:
            registry.model_version_retire(version=version, changed_by="manage.py model_versions")
            self.stdout.write(f"retired {version.label}")
