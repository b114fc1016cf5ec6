"""The advisor's index of stored results spares the advice kind a read for every result that is not the last
of its run's set; it decides only once it has seen the results stream up to the result that woke the kind, and
otherwise leaves the decision to the worker's own read (real nats-server)."""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.client import Client as NATS

from services.advisor import api
from services.advisor.kind import add_arguments, settings_from_args
from shared import bus, subjects
from shared.config import parse_flags
from shared.kinds import InputsIndex
from shared.schemas import ResultEnvelope

DIGEST = "0123456789abcdef"
NEEDS = ("modeling", "cost", "qoe")


async def _publish(nc: NATS, kind: str, generation: int, digest: str = DIGEST) -> int:
    envelope = ResultEnvelope(
        run_id="r", digest=digest, generation=generation, computed_at=0.0, compute_seconds=0.0
    )
    ack = await nc.jetstream().publish(subjects.result_subject(kind, digest), msgspec.json.encode(envelope))
    return ack.seq


async def _caught_up(advisor: api.Advisor, seq: int) -> None:
    async with asyncio.timeout(10):
        while advisor._results_seq < seq:
            await asyncio.sleep(0.01)


async def test_the_index_says_incomplete_only_when_it_knows(nc: NATS) -> None:
    await bus.ensure_topology(nc.jetstream())
    advisor = await api.start_advisor(nc, settings_from_args(parse_flags(add_arguments)))
    try:
        assert isinstance(advisor, InputsIndex)  # so the advice worker uses it
        # Nothing seen yet: the index cannot vouch for anything, so the worker reads for itself.
        assert not await advisor.inputs_incomplete(DIGEST, 1, NEEDS)

        seq = await _publish(nc, "modeling", 1)
        await _caught_up(advisor, seq)
        assert await advisor.inputs_incomplete(DIGEST, seq, NEEDS)  # cost and qoe are missing
        seq = await _publish(nc, "cost", 1)
        await _caught_up(advisor, seq)
        assert await advisor.inputs_incomplete(DIGEST, seq, NEEDS)  # qoe is missing
        seq = await _publish(nc, "qoe", 2)
        await _caught_up(advisor, seq)
        assert await advisor.inputs_incomplete(DIGEST, seq, NEEDS)  # generations 1, 1, 2 differ
        seq = await _publish(nc, "qoe", 1)  # the stored qoe result is generation 1 again
        await _caught_up(advisor, seq)
        assert not await advisor.inputs_incomplete(DIGEST, seq, NEEDS)  # complete: compute
        # Another run's results say nothing about this one.
        other = await _publish(nc, "modeling", 1, digest="fedcba9876543210")
        await _caught_up(advisor, other)
        assert await advisor.inputs_incomplete("fedcba9876543210", other, NEEDS)
    finally:
        await advisor.close()


async def test_the_index_waits_for_the_result_that_woke_the_kind(nc: NATS) -> None:
    await bus.ensure_topology(nc.jetstream())
    advisor = await api.start_advisor(nc, settings_from_args(parse_flags(add_arguments)))
    try:
        for kind in ("modeling", "cost"):
            seq = await _publish(nc, kind, 1)
        await _caught_up(advisor, seq)
        # Asked about a result it has not taken in yet, it waits for it: qoe completes the run.
        check = asyncio.ensure_future(advisor.inputs_incomplete(DIGEST, seq + 1, NEEDS))
        await asyncio.sleep(0.05)
        assert not check.done()
        await _publish(nc, "qoe", 1)
        assert await check is False
        # A result it never sees within INDEX_WAIT_S: in doubt, the answer is "read for yourself".
        started = asyncio.get_running_loop().time()
        assert not await advisor.inputs_incomplete(DIGEST, seq + 1_000, NEEDS)
        assert asyncio.get_running_loop().time() - started >= api.INDEX_WAIT_S * 0.9
    finally:
        await advisor.close()


async def test_only_the_last_result_of_a_complete_set_reads(nc: NATS) -> None:
    """Results stored in quick succession: by the time the earlier ones are checked the index already holds
    the whole set, but only the wake-up of the last one needs to read (the others would compute twice)."""
    await bus.ensure_topology(nc.jetstream())
    advisor = await api.start_advisor(nc, settings_from_args(parse_flags(add_arguments)))
    try:
        seqs = {kind: await _publish(nc, kind, 1) for kind in NEEDS}
        await _caught_up(advisor, max(seqs.values()))
        assert await advisor.inputs_incomplete(DIGEST, seqs["modeling"], NEEDS)
        assert await advisor.inputs_incomplete(DIGEST, seqs["cost"], NEEDS)
        assert not await advisor.inputs_incomplete(DIGEST, seqs["qoe"], NEEDS)
        # The cost result computed again: now it is the one whose wake-up reads.
        again = await _publish(nc, "cost", 1)
        await _caught_up(advisor, again)
        assert await advisor.inputs_incomplete(DIGEST, seqs["qoe"], NEEDS)
        assert not await advisor.inputs_incomplete(DIGEST, again, NEEDS)
    finally:
        await advisor.close()
