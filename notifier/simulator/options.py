"""What ``notifier simulate``'s options mean: the scenario to serve and its limits (``cmd_simulate`` calls this)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from notifier.core.durations import parse_duration
from notifier.errors import ConfigError
from notifier.simulator.scale import check_scale
from notifier.simulator.scenario import Scenario, load_scenario
from notifier.simulator.server import FROM_SCENARIO, FromScenario

DEFAULT_SCENARIO = "demo"

# scale parameter -> the option that sets it
_FLAGS = {"jobs": "--scale", "nodes": "--nodes", "change_share": "--change-share", "node_share": "--node-share",
          "period": "--period", "hold": "--hold", "seed": "--seed"}


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """``notifier simulate``'s options; None: not given."""

    scenario: str | None = None
    scale: int | None = None
    nodes: int | None = None
    change_share: float | None = None
    node_share: float | None = None
    period: str | None = None
    hold: str | None = None
    seed: int | None = None
    rate_limit: float | None = None
    latency: str | None = None


@dataclass(frozen=True, slots=True)
class Simulation:
    """What to serve: the scenario and the limits that replace its ``[limits]`` (FROM_SCENARIO: its own)."""

    scenario: Scenario
    rate_limit: float | FromScenario = FROM_SCENARIO
    latency: float | FromScenario = FROM_SCENARIO


def simulation(options: SimulateOptions) -> Simulation:
    """The scenario and limits the options ask for; ConfigError (exit 2) naming the option for a bad one."""
    scale_options = {"nodes": options.nodes, "change_share": options.change_share, "node_share": options.node_share,
                     "period": options.period, "hold": options.hold, "seed": options.seed}
    if options.scale is None:
        given = [_FLAGS[key] for key, value in scale_options.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --scale N")
        scenario = load_scenario(options.scenario if options.scenario is not None else DEFAULT_SCENARIO)
    else:
        if options.scenario is not None:
            raise ConfigError("--scale N generates its jobs: give --scale or --scenario, not both")
        period = _seconds("--period", options.period)
        hold = _seconds("--hold", options.hold)
        jobs, nodes = options.scale, 10 if options.nodes is None else options.nodes
        change_share = 0.01 if options.change_share is None else options.change_share
        node_share = 0.5 if options.node_share is None else options.node_share
        period = 60.0 if period is None else period
        hold = 300.0 if hold is None else hold
        seed = 0 if options.seed is None else options.seed
        problems = check_scale(jobs=jobs, nodes=nodes, change_share=change_share, node_share=node_share,
                               hold=hold, period=period, seed=seed)
        if problems:
            key, why = problems[0]
            raise ConfigError(f"{_FLAGS[key]} {why}")
        scenario = Scenario.scale(jobs, nodes, change_share=change_share, node_share=node_share, hold=hold,
                                  period=period, seed=seed)
    rate: float | FromScenario = FROM_SCENARIO
    if options.rate_limit is not None:
        if not math.isfinite(options.rate_limit) or options.rate_limit < 0:
            raise ConfigError(f"--rate-limit must be a number of requests per second of at least 0 (0 = unlimited), "
                              f"got {options.rate_limit:g}")
        rate = options.rate_limit
    latency = _seconds("--latency", options.latency)
    return Simulation(scenario, rate, FROM_SCENARIO if latency is None else latency)


def _seconds(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
