"""Synthetic but realistic telemetry for the example runs, as Prometheus text to import into VictoriaMetrics.

Per scenario, every second from 60 s before its start to 30 s after its end:

The seconds form one continuous timeline (see :class:`Timeline`).

* ``rapl_power_watts{zone="package-0"}`` = P(t) = measured mean power (the analysis CSV) + a ripple;
  ``rapl_power_watts{zone="dram"}`` = 2 W (must be excluded by the package queries);
* ``rapl_energy_joules_total{zone="package-0"}``: a counter with C(t+1) = C(t) + P(t), so the energy of the
  seconds ``[a, b)`` is ``sum(P(k) for k in range(a, b))``; plus a dram counter;
* ``docker_containers_total_cpu_percent`` = measured container CPU % + a ripple;
* ``container_cpu_usage_seconds_total`` for a transcoder container growing at ``cores`` per second, plus a
  ``k8s_POD`` container and an unnamed one that the default query must exclude.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

DRAM_W = 2.0


@dataclass(frozen=True)
class ScenarioTruth:
    name: str
    start: float
    end: float
    mean_w: float
    cpu_pct: float
    cores: float

    def power(self, t: int) -> float:
        return self.mean_w + 0.5 * ((t % 10) - 4.5)

    def container_cpu(self, t: int) -> float:
        return self.cpu_pct + 0.5 * ((t % 3) - 1)


def truths(results_file: Path, analysis_csv: Path) -> list[ScenarioTruth]:
    run = json.loads(results_file.read_text())
    with analysis_csv.open() as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    out = []
    for s in run["scenarios"]:
        row = rows[s["name"]]
        out.append(
            ScenarioTruth(
                s["name"],
                s["start_time"],
                s["end_time"],
                float(row["mean_power_w"]),
                float(row["container_cpu_pct"]),
                round(float(row["container_cpu_pct"]) / 25, 3),
            )
        )
    return out


class Timeline:
    """Every second from 60 s before the first scenario to 30 s after the last belongs to the scenario that
    started most recently (or the first one, before it starts): one continuous series, no duplicates."""

    def __init__(self, scenarios: list[ScenarioTruth]) -> None:
        self.scenarios = sorted(scenarios, key=lambda s: s.start)
        self.first = int(self.scenarios[0].start) - 60
        self.last = int(self.scenarios[-1].end) + 30

    def owner(self, t: int) -> ScenarioTruth:
        current = self.scenarios[0]
        for s in self.scenarios:
            if int(s.start) <= t:
                current = s
        return current

    def power(self, t: int) -> float:
        return self.owner(t).power(t)

    def cores(self, t: int) -> float:
        return self.owner(t).cores

    def container_cpu(self, t: int) -> float:
        return self.owner(t).container_cpu(t)

    def energy_between(self, a: int, b: int) -> float:
        """Joules of package power over the seconds [a, b)."""
        return sum(self.power(k) for k in range(a, b))

    def rate_cores(self, t: int, window: int = 30) -> float:
        """rate(container_cpu_usage_seconds_total[window]) at t: (C(t) - C(t - window)) / window."""
        return sum(self.cores(k) for k in range(t - window, t)) / window


def prometheus_text(timeline: Timeline) -> str:
    lines = []
    energy = 1_000_000.0
    dram_energy = 50_000.0
    cpu_seconds = 5_000.0
    pod_seconds = 100.0
    for t in range(timeline.first, timeline.last + 1):
        ms = t * 1000
        power = timeline.power(t)
        lines += [
            f'rapl_power_watts{{zone="package-0"}} {power} {ms}',
            f'rapl_power_watts{{zone="dram"}} {DRAM_W} {ms}',
            f'rapl_energy_joules_total{{zone="package-0"}} {energy} {ms}',
            f'rapl_energy_joules_total{{zone="dram"}} {dram_energy} {ms}',
            f"docker_containers_total_cpu_percent {timeline.container_cpu(t)} {ms}",
            f'container_cpu_usage_seconds_total{{name="transcoder"}} {cpu_seconds} {ms}',
            f'container_cpu_usage_seconds_total{{name="k8s_POD_x"}} {pod_seconds} {ms}',
            f'container_cpu_usage_seconds_total{{name=""}} {pod_seconds} {ms}',
        ]
        energy += power
        dram_energy += DRAM_W
        cpu_seconds += timeline.cores(t)
        pod_seconds += 7.0
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# GPU telemetry as the NVIDIA DCGM exporter publishes it: one series per GPU, labelled gpu/UUID/modelName/
# Hostname, power in W, utilisations in %, and an energy counter in millijoules since boot.
# ---------------------------------------------------------------------------------------------------------

#: (gpu index, UUID, base power W, base SM utilisation %, base NVENC utilisation %, counter at start mJ)
GPUS = (
    ("0", "GPU-3f1c9a52-7d1e-4b8a-9c2f-0a1b2c3d4e5f", 61.25, 38.0, 22.0, 987_654_321_000),
    ("1", "GPU-8e2d7b41-1a9c-4f3e-8d6b-5f4e3d2c1b0a", 118.5, 71.0, 64.0, 412_345_678_000),
)
GPU_MODEL = "NVIDIA L4"
GPU_HOST = "transcode-node-01"


def gpu_power(gpu: int, t: int) -> float:
    """W of GPU ``gpu`` at second t: its base plus a ripple in quarter watts (whole millijoules per second)."""
    return GPUS[gpu][2] + 0.25 * ((t % 7) - 3)


def gpu_util(gpu: int, t: int) -> float:
    """SM utilisation of GPU ``gpu`` at second t, %."""
    return GPUS[gpu][3] + ((t % 5) - 2)


def gpu_enc_util(gpu: int, t: int) -> float:
    """NVENC utilisation of GPU ``gpu`` at second t, %."""
    return GPUS[gpu][4] + ((t % 4) - 1.5)


def gpu_energy_mj_between(gpu: int, a: int, b: int) -> float:
    """Millijoules the counter of GPU ``gpu`` gains over the seconds [a, b): each second adds P(t) x 1000."""
    return sum(gpu_power(gpu, k) * 1000 for k in range(a, b))


def dcgm_text(first: int, last: int) -> str:
    """Every second of [first, last], both GPUs, in Prometheus text format (ms timestamps)."""
    lines = []
    counters = [float(g[5]) for g in GPUS]
    for t in range(first, last + 1):
        ms = t * 1000
        for i, (index, uuid, *_rest) in enumerate(GPUS):
            labels = (
                f'gpu="{index}",UUID="{uuid}",device="nvidia{index}",modelName="{GPU_MODEL}",'
                f'Hostname="{GPU_HOST}"'
            )
            lines += [
                f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} {gpu_power(i, t)} {ms}",
                f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} {counters[i]:.0f} {ms}",
                f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {gpu_util(i, t)} {ms}",
                f"DCGM_FI_DEV_ENC_UTIL{{{labels}}} {gpu_enc_util(i, t)} {ms}",
                f"DCGM_FI_DEV_DEC_UTIL{{{labels}}} 3 {ms}",
            ]
            counters[i] += gpu_power(i, t) * 1000
    return "\n".join(lines) + "\n"
