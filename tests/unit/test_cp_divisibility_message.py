"""The sequence-length divisibility error names the configured context-parallel size.

Load-balanced CP splits every sequence into 2 x CP chunks, so the divisor is 2 x CP; the message
once printed that product as "CP=", naming a CP size the user never configured.
"""

import pytest

from lumos_megatron.config import ConfigError, parse_cli
from lumos_megatron.config.schema import ParallelConfig
from lumos_megatron.platform.parallel import sequence_length_divisor


@pytest.mark.parametrize("cp", [2, 3, 4])
def test_divisor_reason_names_the_configured_cp(cp):
    divisor, why = sequence_length_divisor(ParallelConfig(context_parallel_size=cp))
    assert divisor == 2 * cp
    assert f"CP={cp}" in why and f"CP={2 * cp}" not in why


def test_validation_message_names_the_configured_cp():
    with pytest.raises(ConfigError) as err:
        parse_cli(["--context-parallel-size", "2", "model.attention_backend=sdpa", "data.seq_length=1001"])
    message = str(err.value)
    assert "data.seq_length=1001 is not a multiple of 4" in message
    assert "CP=2" in message and "CP=4" not in message


def test_sequence_and_context_parallel_together():
    with pytest.raises(ConfigError) as err:
        parse_cli(["--tensor-model-parallel-size", "2", "--sequence-parallel", "--context-parallel-size", "3",
                   "model.attention_backend=sdpa", "data.seq_length=1001"])
    message = str(err.value)
    assert "is not a multiple of 12" in message and "TP=2" in message
    assert "CP=3" in message and "CP=6" not in message
