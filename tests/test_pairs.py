import pytest

from rewardlab.data.pairs import EpochBatchSampler


@pytest.mark.parametrize("group_by_length", [True, False])
def test_each_epoch_order_depends_on_the_seed_and_the_epoch_alone(group_by_length):
    """Every item once an epoch, in batches of at most 4; an epoch's order is the same whichever epochs came before it
    (what --resume relies on), and epochs differ from one another."""
    lengths = [(7 * i) % 23 + 1 for i in range(30)]
    straight = EpochBatchSampler(lengths, 4, seed=3, group_by_length=group_by_length)
    orders = []
    for epoch in range(3):
        straight.set_epoch(epoch)
        orders.append(list(straight))
    for batches in orders:
        assert sorted(i for batch in batches for i in batch) == list(range(30))
        assert len(batches) == len(straight) == 8 and all(len(batch) <= 4 for batch in batches)
    fresh = EpochBatchSampler(lengths, 4, seed=3, group_by_length=group_by_length)
    fresh.set_epoch(2)
    assert list(fresh) == orders[2]
    assert orders[0] != orders[1] != orders[2]
    if group_by_length:  # one mega-batch here: each batch holds neighbours in length
        assert all(lengths[b[0]] >= lengths[b[-1]] for b in orders[0])
