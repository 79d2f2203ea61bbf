"""The rest of an epoch dealt to a new layout as torch's DistributedSampler deals an epoch (issue #21)."""
import pytest
from torch.utils.data.distributed import DistributedSampler

from monitor.runtime.elastic import deal, distributed_order, steps_to_deal


@pytest.mark.parametrize(("size", "processes", "batch"), [(100, 3, 7), (99, 3, 33), (10, 4, 3), (5, 2, 8)])
@pytest.mark.parametrize("pad", [True, False])
def test_dealing_an_order_gives_each_rank_what_a_distributed_sampler_gives_it(size, processes, batch, pad):
    order = distributed_order({"size": size, "shuffle": True, "seed": 3, "drop_last": False, "processes": 1}, 2)
    for rank in range(processes):
        sampler = DistributedSampler(range(size), num_replicas=processes, rank=rank, shuffle=True, seed=3,
                                     drop_last=not pad)
        sampler.set_epoch(2)
        batches = deal(order, processes, rank, batch, pad=pad)
        assert [i for b in batches for i in b] == list(sampler)
        assert len(batches) == steps_to_deal(size, processes, batch, pad=pad)
        assert all(len(b) == batch for b in batches[:-1])


def test_at_most_so_many_steps_the_last_one_takes_the_rest():
    batches = deal(list(range(50)), 2, 1, 5, most=3)
    assert [len(b) for b in batches] == [5, 5, 15] and [i for b in batches for i in b] == list(range(1, 50, 2))
    assert deal([], 3, 0, 4) == [] and steps_to_deal(0, 3, 4) == 0
    assert deal(list(range(7)), 2, 0, 2, drop_last=True) == [[0, 2], [4, 6]]  # padded to 8, 4 each


def test_one_process_order_drawn_from_a_generator_of_its_own_is_not_taken_as_drawable_elsewhere():
    import torch
    from torch.utils.data import DataLoader

    from monitor.runtime.elastic import cannot_draw, order_source

    data = list(range(40))
    own = order_source(DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)))
    plain = order_source(DataLoader(data, batch_size=4, shuffle=True))
    assert own["own_generator"] and not plain["own_generator"]
    two = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=2, rank=0))
    assert cannot_draw(plain, two) is None  # drawn again from torch's global RNG, as it was
    assert "cannot draw again" in cannot_draw(own, two)
    assert "cannot draw again" in cannot_draw({k: v for k, v in plain.items() if k != "own_generator"}, two)
