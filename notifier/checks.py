"""``notifier check``: load everything the service would, and render every template.

An undefined variable or a syntax error in a template is caught here, before
production, by rendering each channel's templates against sample alerts in strict mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jinja2

from notifier.channels import CHANNEL_TYPES
from notifier.clock import utcnow
from notifier.errors import ConfigError, NotifierError, TemplateError
from notifier.render import sample_groups
from notifier.runtime import close_channels, create_channels, load_runtime
from notifier.source.client import DgcClient


def check_all(config_path: Path) -> tuple[list[str], str]:
    """Return (problems, summary); problems name the file and the table/rule/template and key."""
    try:
        runtime = load_runtime(config_path, strict_templates=True)
    except ConfigError as exc:
        return [str(exc)], ""
    config = runtime.config
    problems: list[str] = []
    if not config.channels:
        problems.append(f"{config.path}: no [channels.NAME] tables: alerts would go nowhere")
    if not runtime.rules:
        problems.append(f"{config.rules_dir}: no rules (*.toml files with [[rule]] tables): nothing would ever alert")

    try:
        close_channels(create_channels(config))
    except NotifierError as exc:
        problems.append(str(exc))
    try:
        asyncio.run(DgcClient(config.source).aclose())
    except NotifierError as exc:
        problems.append(f"{config.path}: source: {exc}")

    if runtime.renderer.user_dir is not None:
        for path in sorted(runtime.renderer.user_dir.glob("*.j2")):
            try:
                runtime.renderer.env.get_template(path.name)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{path}:{exc.lineno}: template syntax error: {exc.message}")

    rendered = 0
    now = utcnow()
    for name, channel in sorted(config.channels.items()):
        templates = {"default"} | {r.template for r in runtime.rules if name in r.channels}
        for template in sorted(templates):
            for group in sample_groups(name):
                group = group.__class__(group.channel, group.group, group.alerts, template)
                try:
                    CHANNEL_TYPES[channel.type].compose(runtime.renderer, group, now)
                    rendered += 1
                except TemplateError as exc:
                    problems.append(f"template {template!r} for channel {name!r} ({channel.type}): {exc}")
                    break
    summary = (f"ok: {config.path}: {len(runtime.rules)} rules, {len(config.channels)} channels, "
               f"{rendered} sample messages rendered")
    return problems, summary
