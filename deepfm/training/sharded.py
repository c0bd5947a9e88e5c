"""Model-parallel embedding tables with torchrec: one table per field, sharded over the ranks.

Data-parallel training (deepfm.distributed) keeps the whole shared table on every rank. That
stops working once the table and its optimizer state are larger than one device. Here the
same table is cut at its per-field offsets into one torchrec table per field, and torchrec's
DistributedModelParallel places them:

- a table of ``row_wise_min_rows`` rows or more is split row-wise over every rank;
- a smaller one goes whole to one rank (table-wise): the rank holding the fewest rows so far;
- the dense part (FM bias, MLP) is replicated and wrapped in DistributedDataParallel.

In a step each rank sends the ids of its batch rows to the ranks owning them and gets their
pooled vectors back (torchrec's all-to-alls), so a rank holds only its share of the rows and
of their optimizer state. Tables are trained by fbgemm's fused row-wise Adagrad, applied inside
the backward pass (no table-sized gradient is ever built; its state is one float per row),
the dense part by Adam.

Install: ``pip install "deepfm[shard]"`` and then ``pip install --no-deps torchrec``, with
versions matching PyTorch (constraints.txt pins the pair for the PyTorch we test with).
torchrec declares ``fbgemm-gpu``, fbgemm's CUDA build: it installs into the same
``fbgemm_gpu`` folder as ``fbgemm-gpu-cpu`` and then fails to load without
``libtorch_cuda.so``. On a CUDA machine install ``torchrec`` with its ``fbgemm-gpu`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepfm.config import ModelConfig
from deepfm.data.encoded import Batch, EncodedDataset, EpochOrder
from deepfm.errors import ConfigError
from deepfm.features.pipeline import FeaturePipeline
from deepfm.model.deepfm import DeepFM, InputLayout
from deepfm.model.layers import scale_numeric
from deepfm.model.optim import dense_adam
from deepfm.training.distributed import Context, global_batches

if TYPE_CHECKING:  # the names require_torchrec puts into this module
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise, table_wise
    from torchrec.distributed.types import ShardingPlan
    from torchrec.optim import RowWiseAdagrad
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.optimizers import in_backward_optimizer_filter

INSTALL_HINT = 'pip install "deepfm[shard]" && pip install --no-deps torchrec (see deepfm/training/sharded.py)'


def require_torchrec() -> None:
    """Import torchrec (seconds: it loads fbgemm's kernels) into this module's namespace, or
    raise a clear error saying what to install. Imported on first use, not with deepfm."""
    global EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType, DistributedModelParallel
    global construct_module_sharding_plan, row_wise, table_wise, ShardingPlan, RowWiseAdagrad
    global apply_optimizer_in_backward, in_backward_optimizer_filter
    try:
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
        from torchrec.distributed import DistributedModelParallel
        from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise, table_wise
        from torchrec.distributed.types import ShardingPlan
        from torchrec.optim import RowWiseAdagrad
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
        from torchrec.optim.optimizers import in_backward_optimizer_filter
    except Exception as e:  # ImportError, or OSError from fbgemm's libraries
        raise ConfigError(f"sharded tables need torchrec and fbgemm ({INSTALL_HINT}): {e}") from e


@dataclass(frozen=True)
class FieldTable:
    """One field's rows of the shared table: rows [offset, offset + rows)."""

    name: str
    offset: int
    rows: int
    pooling: str  # "sum" for a single-valued field (a bag of one id); the field's own for multi-hot


def field_tables(pipeline: FeaturePipeline) -> list[FieldTable]:
    """The shared table cut at its field offsets, in the model's field order (single-valued
    fields, then multi-hot ones)."""
    out = []
    for spec in [*pipeline.single_fields, *pipeline.multi_hot_fields]:
        st = pipeline.states[spec.name]
        pooling = spec.pooling if pipeline.encoders[spec.name].multi_hot else "sum"  # one row: sum is the row
        out.append(FieldTable(spec.name, st.offset, st.size, pooling))
    return out


def plan_tables(tables: list[FieldTable], world: int, row_wise_min_rows: int) -> dict[str, tuple[str, list[int]]]:
    """Where each table goes: ``{name: ("row_wise", all ranks) | ("table_wise", [rank])}``.
    Large tables are split over every rank; the others are placed whole, largest first, each
    on the rank with the fewest rows so far, so the ranks end up with similar row counts."""
    load = [0.0] * world
    plan: dict[str, tuple[str, list[int]]] = {}
    for t in sorted(tables, key=lambda t: -t.rows):
        if world > 1 and t.rows >= max(row_wise_min_rows, world):
            plan[t.name] = ("row_wise", list(range(world)))
            load = [x + t.rows / world for x in load]
        else:
            rank = min(range(world), key=lambda r: load[r])
            plan[t.name] = ("table_wise", [rank])
            load[rank] += t.rows
    return plan


def _init_rows(weight: torch.Tensor, dim: int, std: float) -> torch.Tensor:
    """FieldEmbedding's initialization for a table (or one shard of it): v ~ N(0, std),
    the first-order weight and the padding columns zero."""
    if weight.dim() != 2:  # torchrec passes a rank the (empty) placeholder of a table it does not hold
        return weight
    with torch.no_grad():
        weight.zero_()
        weight[:, :dim].normal_(0.0, std)
    return weight


class ShardedFieldEmbedding(nn.Module):
    """FieldEmbedding's forward over per-field torchrec tables.

    forward(ids (B,S) int64, values (B,V) float32, multi_hot [(bag starts (B,), ids (nnz,))])
      -> (B, F, D+1), the same vectors FieldEmbedding gives from the same rows.

    Tables are built on the meta device: DistributedModelParallel allocates only the shards of
    each rank. Their width is D+1 rounded up to a multiple of 4, which fbgemm's GPU kernels
    need; the padding columns start at zero and get no gradient.
    """

    def __init__(
        self, tables: list[FieldTable], dim: int, n_single: int, scaled_positions: list[int], init_std: float
    ) -> None:
        require_torchrec()
        super().__init__()
        self.tables, self.dim, self.n_single = list(tables), dim, n_single
        self.width = 4 * math.ceil((dim + 1) / 4)
        self.names = [t.name for t in tables]
        configs = [
            EmbeddingBagConfig(
                name=t.name,
                embedding_dim=self.width,
                num_embeddings=t.rows,
                feature_names=[t.name],
                pooling=PoolingType.MEAN if t.pooling == "mean" else PoolingType.SUM,
                init_fn=partial(_init_rows, dim=dim, std=init_std),
            )
            for t in tables
        ]
        self.ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
        self.register_buffer("offsets", torch.tensor([t.offset for t in tables], dtype=torch.long), persistent=False)
        self.register_buffer("scaled", torch.tensor(scaled_positions, dtype=torch.long), persistent=False)

    offsets: torch.Tensor  # (F,) buffers
    scaled: torch.Tensor

    def features(self, ids: torch.Tensor, multi_hot: list[tuple[torch.Tensor, torch.Tensor]]) -> KeyedJaggedTensor:
        """The batch as torchrec wants it: per field (key), its ids local to its table and the
        length of every row's bag (1 for single-valued fields)."""
        b, s = ids.shape
        values = [(ids - self.offsets[:s]).t().reshape(-1)]  # key-major: field 0's B ids, then field 1's ...
        lengths = [torch.ones(b * s, dtype=torch.int32, device=ids.device)]
        for k, (starts, mh_ids) in enumerate(multi_hot):
            values.append(mh_ids - self.offsets[s + k])
            lengths.append(torch.diff(starts, append=starts.new_full((1,), mh_ids.numel())).to(torch.int32))
        return KeyedJaggedTensor(keys=self.names, values=torch.cat(values), lengths=torch.cat(lengths))

    def forward(
        self, ids: torch.Tensor, values: torch.Tensor, multi_hot: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        pooled = self.ebc(self.features(ids, multi_hot)).to_dict()  # {field: (B, width)}
        e = torch.stack([pooled[n] for n in self.names], dim=1)[..., : self.dim + 1]  # (B, F, D+1)
        single = scale_numeric(e[:, : self.n_single], self.scaled, values)
        return torch.cat([single, e[:, self.n_single :]], dim=1) if len(self.names) > self.n_single else single


class ShardedDeepFM:
    """DeepFM with per-field tables sharded over the ranks of the default process group.

    Every rank builds it with the same arguments (collectives run inside), then calls
    :meth:`step` with its own part of each global batch: parts of equal size, so that
    every rank takes part in every all-to-all.
    """

    def __init__(
        self,
        layout: InputLayout,
        config: ModelConfig,
        tables: list[FieldTable],
        lr: float = 1e-3,
        table_lr: float = 0.05,
        row_wise_min_rows: int = 1 << 20,
        device: torch.device | str = "cpu",
        weight_decay: float = 0.0,
    ) -> None:
        require_torchrec()
        if not dist.is_initialized():
            raise ConfigError("ShardedDeepFM needs a process group: start it under torchrun (gloo on CPU, NCCL on GPU)")
        if sum(t.rows for t in tables) != layout.num_embeddings or len(tables) != layout.n_fields:
            raise ConfigError(
                f"the field tables ({len(tables)} fields, {sum(t.rows for t in tables)} rows) do not cut "
                f"this layout's table ({layout.n_fields} fields, {layout.num_embeddings} rows)"
            )
        config = config.resolved(layout)  # "auto" settings as DeepFM resolves them
        self.layout, self.config, self.tables = layout, config, list(tables)
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.device = torch.device(device)
        embedding = ShardedFieldEmbedding(
            tables, config.embedding_dim, layout.n_single, list(layout.scaled_positions), float(config.init_std)
        )
        model = DeepFM(layout, config, embedding=embedding)
        self.width = embedding.width  # columns per table row: D+1 padded to a multiple of 4
        # Fused into fbgemm's backward: the table rows a batch touched are stepped in place.
        apply_optimizer_in_backward(RowWiseAdagrad, embedding.ebc.parameters(), {"lr": table_lr})
        self.placement = plan_tables(tables, self.world, row_wise_min_rows)
        generators = {
            name: row_wise(compute_kernel="fused")
            if how == "row_wise"
            else table_wise(rank=ranks[0], compute_kernel="fused")
            for name, (how, ranks) in self.placement.items()
        }
        module_plan = construct_module_sharding_plan(
            embedding.ebc,
            per_param_sharding=generators,
            local_size=self.world,
            world_size=self.world,
            device_type=self.device.type,
        )
        self.model = DistributedModelParallel(
            model, device=self.device, plan=ShardingPlan({"embedding.ebc": module_plan})
        )
        self.dense = [p for _, p in in_backward_optimizer_filter(self.model.named_parameters())]
        self.optimizer = dense_adam(self.dense, lr=lr, weight_decay=weight_decay)

    def step(self, batch: Batch, global_rows: int) -> float:
        """One training step on this rank's part of a global batch of ``global_rows`` rows.
        Returns the part's summed log loss."""
        return float(self.step_logits(batch, global_rows)[1])

    def step_logits(self, batch: Batch, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step`, returning (the part's logits (B,), its summed log loss ())."""
        assert batch.labels is not None
        self.model.train()
        logits = self.model(batch.to(self.device))
        loss_sum = F.binary_cross_entropy_with_logits(logits, batch.labels.to(self.device), reduction="sum")
        # Table rows receive the sum of every rank's gradient: with each rank's loss divided by
        # the global row count, that is the gradient of the global mean loss. DDP averages the
        # dense gradients instead (divides by world), which the factor below undoes. (The
        # data-parallel trainer registers a summing comm hook instead, deepfm.distributed
        # _sum_hook; here DDP sits inside torchrec's DistributedModelParallel.)
        (loss_sum / global_rows).backward()
        for p in self.dense:
            if p.grad is not None:
                p.grad.mul_(self.world)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return logits.detach(), loss_sum.detach()

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        """(B,) logits for this rank's rows (every rank must call it, with equal B)."""
        self.model.eval()
        return self.model(batch.to(self.device))

    def shards(self) -> Iterator[tuple[FieldTable, int, torch.Tensor]]:
        """(table, its first row in the shard, the shard (rows, width)) for every shard this
        rank holds. The tensors are the fused kernel's own weights: writing them sets the model."""
        state = self.model.state_dict()
        for t in self.tables:
            key = next(k for k in state if k.endswith(f"embedding_bags.{t.name}.weight"))
            for shard in state[key].local_shards():
                yield t, int(shard.metadata.shard_offsets[0]), shard.tensor

    def local_rows(self) -> int:
        """Table rows held by this rank."""
        return sum(int(s.shape[0]) for _, _, s in self.shards())

    @torch.no_grad()
    def load_table(self, weight: torch.Tensor) -> None:
        """Set the tables from a shared table (num_embeddings, D+1), e.g. FieldEmbedding.weight."""
        d1 = self.config.embedding_dim + 1
        for t, r0, shard in self.shards():
            rows = weight[t.offset + r0 : t.offset + r0 + shard.shape[0]]
            shard.zero_()
            shard[:, :d1].copy_(rows.to(shard.device, shard.dtype))

    @torch.no_grad()
    def load_from(self, plain: DeepFM) -> None:
        """Start from a plain DeepFM's weights (a trained bundle's model, or a seeded init):
        its shared table into the shards, its dense parameters into every rank's replica."""
        self.load_table(plain.embedding.weight)
        dense = {k: v for k, v in plain.state_dict().items() if not k.startswith("embedding.")}
        mine = self._dense_state()
        if set(dense) != set(mine):
            raise RuntimeError(f"sharded model and DeepFM differ: {sorted(set(dense) ^ set(mine))}")
        for k, v in mine.items():
            v.copy_(dense[k].to(v.device, v.dtype))

    @torch.no_grad()
    def gather_table(self) -> torch.Tensor:
        """The shared table (num_embeddings, D+1) on every rank: each rank fills the rows it
        owns and one all-reduce sums them (every row has one owner). Sends the whole table:
        fine to save a model of a few GB; larger ones are saved shard by shard."""
        d1 = self.config.embedding_dim + 1
        full = torch.zeros(self.layout.num_embeddings, d1, device=self.device)
        for t, r0, shard in self.shards():
            full[t.offset + r0 : t.offset + r0 + shard.shape[0]] = shard[:, :d1].to(full.device)
        dist.all_reduce(full)
        return full.cpu()

    @property
    def table_lr(self) -> float:
        """Row-wise Adagrad's learning rate (every table has the same)."""
        return float(self.model.fused_optimizer.param_groups[0]["lr"])

    @table_lr.setter
    def table_lr(self, lr: float) -> None:
        for group in self.model.fused_optimizer.param_groups:
            group["lr"] = lr
        # The fused kernels read the rate from their own copy: step() sets it (nothing else).
        self.model.fused_optimizer.step()

    def adagrad_shards(self) -> Iterator[tuple[FieldTable, int, torch.Tensor]]:
        """(table, its first row in the shard, row-wise Adagrad's state (rows,)) for every
        shard this rank holds; writing the tensors sets the fused kernel's state."""
        state = self.model.fused_optimizer.state_dict()["state"]
        for t in self.tables:
            # Only the tables this rank holds a shard of have optimizer state here.
            key = next((k for k in state if k.endswith(f"embedding_bags.{t.name}.weight")), None)
            if key is None:
                continue
            for shard in state[key][f"{t.name}.momentum1"].local_shards():
                yield t, int(shard.metadata.shard_offsets[0]), shard.tensor

    @torch.no_grad()
    def gather_adagrad(self) -> torch.Tensor:
        """Row-wise Adagrad's state of the whole table (num_embeddings,) on every rank
        (collective, like :meth:`gather_table`): what a checkpoint holds."""
        full = torch.zeros(self.layout.num_embeddings, device=self.device)
        for t, r0, state in self.adagrad_shards():
            full[t.offset + r0 : t.offset + r0 + state.shape[0]] = state.to(full.device)
        dist.all_reduce(full)
        return full.cpu()

    @torch.no_grad()
    def load_adagrad(self, full: torch.Tensor) -> None:
        """Set row-wise Adagrad's state from :meth:`gather_adagrad`'s (num_embeddings,)."""
        for t, r0, state in self.adagrad_shards():
            state.copy_(full[t.offset + r0 : t.offset + r0 + state.shape[0]].to(state.device, state.dtype))

    def _dense_state(self) -> dict[str, torch.Tensor]:
        """Dense parameters and buffers (batch-norm statistics) by their DeepFM names; the
        state dict's other entries are the tables' ShardedTensors."""
        return {k: v for k, v in self.model.state_dict().items() if ".ebc." not in f".{k}"}

    def to_deepfm(self) -> DeepFM:
        """A plain DeepFM with the trained weights (collective: every rank calls it), to score,
        save as a Bundle, export or serve like any other."""
        plain = DeepFM(self.layout, self.config)
        self.copy_into(plain)
        return plain.eval()

    @torch.no_grad()
    def copy_into(self, plain: DeepFM) -> None:
        """Write the trained weights into ``plain``, a DeepFM of the same layout and config
        (collective: every rank calls it). Draws no random numbers, unlike building a DeepFM."""
        table = self.gather_table()
        dense = {k: v.detach().cpu() for k, v in self._dense_state().items()}
        missing, unexpected = plain.load_state_dict({"embedding.weight": table, **dense}, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"sharded model and DeepFM differ: missing {missing}, unexpected {unexpected}")


def rank_batches(data: EncodedDataset, global_batch: int, seed: int) -> Iterator[Batch]:
    """This rank's equal part of each global batch of a shuffled epoch (the rows one process
    would take, cut into world contiguous parts). A last global batch that does not split
    evenly is left out: torchrec's all-to-alls want the same batch size on every rank."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if global_batch % world:
        raise ConfigError(f"the global batch ({global_batch}) must split evenly over {world} ranks")
    part = global_batch // world
    # min_part = part: a last global batch short of global_batch is dropped on every rank.
    for rows, _ in global_batches(EpochOrder(len(data), seed), part, Context(rank=rank, world=world), min_part=part):
        yield data.batch(rows)
