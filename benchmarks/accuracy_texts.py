"""The prose of docs/accuracy.md that the results do not write: the protocol, the defaults and
the evidence for each, and how to read the curves. benchmarks/accuracy_report.py fills in
the tables around it."""

CURVES_TEXT = """The runs that recorded their epochs (the study's, and this benchmark's deepfm defaults runs:
each keeps every epoch's valid AUC and dense learning rate from `metrics.json`): where a run peaks,
and what each fall back to the best epoch's weights, at the learning rates times `lr_decay`
(0.03; 0.1 in runs from before it changed), finds after it. "[lr x]" marks the first epoch at a new rate, "*" an epoch that started
from a fresh embedding table (`reset_embeddings on`).
"""


DEFAULTS_TEXT = """## The defaults and the evidence

`deepfm train` with no flags resolves every `auto` setting from the training data and writes the
values it chose into the model's `config.json` and `metrics.json` (`resolved`), so a run trains
the same model again from its own config.

| setting | default | why |
|---|---|---|
| `model.init_std` | `auto`: `sqrt(s / sqrt(P·D))`, clipped to [0.001, 0.1] (P field pairs, D = embedding size), s = 0.1 when each table row is seen 60 times or more in training, else 0.001 (0.0303 and 0.003 for 39 fields of 16) | the FM pairwise term starts with spread s in logit units whatever the number of fields. On sparse data most rows are seen a few times and their random start stays noise in the pairs at test time: a start near zero gains on the sparse sets (`init_std 0.003` against the 0.0303 of the dense rule: +0.0024 tail, +0.0057 noisy, +0.0007 criteo-100k; -0.0035 on the Criteo sample, within its spread). Dense data learns every row, and interaction-heavy data wants the larger start (interactions: 0.7680 at 0.0303, 0.7659 at 0.01, 0.7642 at 0.003); Frappe is even from 0.003 to 0.061. At 1M rows, where min_count 10 makes every set dense, 0.003 against the defaults' run of the same seed gained on the noisy (+0.0009 and +0.0008, seeds 1 and 2) and tail (+0.0007 and +0.0002) settings and lost on interactions (-0.0010) and criteo (-0.0005, seed 1); on noisy 1M 0.001 moved it by -0.0001 and 0.0001 by -0.0062 (seed 1); interactions at 100k lost 0.0038 at 0.003 (3 seeds). 0.003 helps the noisy settings and hurts the interaction-heavy ones at every size tried (and criteo at 1M), so the dense start stays |
| `model.batch_norm` | `auto`: on when each table row is seen 60 times or more in training | batch norm fits the MLP fast: a gain where values are seen often, memorization where most are rare (the `batch_norm on` / `off` rows below). On noisy 1M (dense after min_count 10, seed 1) turning it off lost 0.0035, and the peers' MLP (`dropout 0 batch_norm off`) 0.0029: it reached a better first epoch (valid AUC 0.6762 against 0.6749) but its pass at the decayed rates gained less (+0.0009 against +0.0043) |
| `train.embedding_lr` | `auto`: 3e-3 at 60 rows per table row or more; below, 1e-3, and for models with an MLP 1e-3 × sqrt(batch / 256), at most 3e-3 (1e-3 at batches of 256, 2e-3 at 1024, 3e-3 at 4096) | on sparse data at batches of 256, rare values' vectors memorize their few clicks at the larger step (`embedding_lr 3e-3`: -0.0017 criteo-100k, -0.0026 tail-100k, -0.0072 noisy-100k; on the Criteo sample -0.0044 against 1e-3 under the init rule of its day, within its spread); frequent values learn faster with it. Row-wise Adam moves a row about one step for each batch that holds it, so a value seen in most batches gets one update a batch: larger batches give it fewer, and the sparse step grows with the square root of the batch. On the tail setting, whose best epoch is its first, 1e-3 left DeepFM's first epoch underfit at batches of 1024 and 4096: 2e-3 gained +0.0057 at 300k rows (3e-3 the same within the spread), and at 1M rows 3e-3, a batch of 1024 or 2048, or batch norm each gained about +0.011 (single seeds, `synth-tail-1m` rows below). FM alone, with no MLP or dropout between its vectors and the clicks, memorized faster at the larger step (tail, 3 seeds: 0.7294 ± 0.0027 at 2e-3 against 0.7313 ± 0.0007 at 1e-3 at 300k rows; 0.7374 ± 0.0029 at 3e-3 against 0.7406 ± 0.0007 at 1M) and LR did not move (0.7306 and 0.7341 against 0.7305 and 0.7342): both keep 1e-3 (`accuracy-2026-12-07-tail-300k-deepfm.json` and `-tail-1m-deepfm.json` hold the runs at the larger step). On noisy 1M, dense after min_count 10, 1e-3 lost 0.0032 (seed 1) |
| `train.batch_size` | `auto`: the power of two nearest training rows / 256 (about 256 steps an epoch), in [256, 4096]; below ~8k rows, rows / 32 (at least 64) | early stopping looks once an epoch, and the rule before (32 steps an epoch: 2048 at 80k rows) ended 100k-row runs before the pairs were learned: at 80k training rows, 256 gains +0.003 (criteo), +0.016 (interactions), +0.005 (tail) and +0.007 (noisy) over 2048, and beats 512 on all four (`batch_size` rows below); Frappe (46k rows) is within its spread at 256, 512 and 1024. From ~500k rows it is 4096, the fast batch, as before: on the 1M-row tail setting batches of 1024 and 2048 gained as much as the larger row-wise step does at 4096, which costs no speed (`train.embedding_lr`); on noisy 1M a batch of 2048 lost 0.0010 (seed 1) |
| `train.lr` | 1e-3 (Adam, dense parameters) | the common choice of every peer; 5e-4 lost 0.0023 on noisy 1M (seed 1) |
| `train.epochs`, `patience`, `min_improvement` | 50, 2, 1e-4 | training ends by early stopping on validation AUC (the `epochs` column never reaches 50); a drop of less than 0.001 from the best counts as a stall and training goes on, a larger one goes back to the best epoch's weights with the learning rates × `lr_decay` 0.03 |
| `train.lr_decay` | 0.03 | on every 300k and 1M set the second pass at 1e-3 memorizes (valid AUC falls while train AUC jumps: the curves below), and a pass from the best epoch's weights at the smaller rates gains it back and more. A larger decay step memorizes again: `lr_decay 0.3` lost 0.0042 on noisy 1M (tail 1M +0.0001). A smaller one, 0.03, against the defaults' run of the same seed (the defaults of the time: 0.1, no fresh tables; seed 1; criteo-10k and Frappe seeds 1-3): +0.0012 tail 1M, +0.0011 tail 100k, +0.0010 noisy 100k, +0.0008 criteo 100k, +0.0006 interactions 1M, +0.0003 interactions 300k and 100k, +0.0002 criteo 1M, +0.0001 criteo 300k and noisy 300k, -0.0003 noisy 1M, -0.0009 tail 300k, criteo-10k 0.0000, Frappe -0.0001: about +0.0003 on average, within one seed's spread on most sets. Seed 2 gained on every set it ran (tail 1M +0.0011, noisy 1M +0.0009, criteo 300k and tail 300k +0.0004, interactions 300k +0.0003, noisy 300k +0.0001), and seed 3 on the three it ran (tail 1M +0.0019, tail 300k +0.0009, noisy 1M +0.0001): on tail 1M the three seeds gain +0.0011 to +0.0019, on noisy 1M -0.0003 to +0.0009. 0.01 is no better (tail 1M +0.0012, interactions 300k +0.0002, criteo 300k -0.0001) and takes 6-11 epochs. With fresh tables (`reset_embeddings on lr_decay 0.03` against `reset_embeddings on`, same seed): noisy 1M +0.0007, +0.0008 and +0.0014 (seeds 1-3), tail 1M +0.0011 (seed 1) |
| `train.reset_embeddings` | `auto`: on for models with an MLP, off for FM, LR, warm starts and sharded tables | MEDA (Fan et al. 2024): the second pass over the rows memorizes because the vectors have seen them (valid AUC falls at epoch 2 on every 300k and 1M set: the curves below), so epochs 2, 3, ... start from a fresh table while each is a new best, the MLP learning across the tables; the first that is not goes back to the best weights and training goes on as before (a fall then decays as usual). `reset_embeddings on` against the defaults' run of the same seed (the defaults of the time: off, `lr_decay` 0.1), seed 1: +0.0042 tail 1M, +0.0034 criteo 1M, +0.0032 noisy 1M, +0.0008 interactions 1M; +0.0034 tail 300k, +0.0014 noisy 300k, +0.0006 criteo 300k, +0.0004 interactions 300k; +0.0076 noisy 100k, +0.0034 tail 100k, +0.0007 interactions 100k, +0.0000 criteo 100k; +0.0014 criteo-10k, +0.0007 Frappe: no set lost. Seeds 2 and 3: tail 1M +0.0040 (seed 2); noisy 1M +0.0011 and +0.0003, so noisy 1M's three seeds give 0.6833 ± 0.0013. With `lr_decay 0.03` as well, noisy 1M's three seeds give 0.6843 ± 0.0011. Runs take more epochs (noisy 1M 8-10 against 5-7) |
| `train.calibrate` | true | Platt scaling fitted on the validation rows: early stopping keeps the epoch of the best AUC, often past the best logloss; skipped with fewer than 50 rows of a class or where it would reverse the ranking |
| `model.dropout`, `l2_embedding` | 0.2, 1e-5 | dropout 0 fit worse on every set tried, and on noisy 1M (seed 1) 0 lost 0.0033, 0.1 lost 0.0014 and 0.4 lost 0.0045; a larger L2 on the rows a batch uses (1e-4 and up) held Frappe's validation AUC on a plateau for good |
| `embedding_dim`, `hidden` | 16, 400×400×400 | the DeepFM paper's MLP; `deepfm tune` searches both; `embedding_dim 32` moved noisy 1M by -0.0001 (seed 1) |
| `min_count` (every field) | `auto`: 2 up to 100k training rows, rising linearly to 10 at 200k and staying there (4 at 120k, 6 at 150k) | values seen fewer times in the training part share their field's OOV row. A value seen a few times gets a vector that memorizes its rows, and from a few hundred thousand rows on a run holds many such values and trains them for several epochs. With 10 the first epoch is no better (interactions at 1M, seed 1: valid AUC 0.7988 after one epoch against 0.7996 with 2; both curves are below), but the second pass memorizes less, so the fall-backs to the best weights find more (0.8023 at best against 0.8009). The defaults with `auto` against the same command at 2, 3 seeds each (`accuracy-2026-12-07-auto-*.json` against the earlier files): at 240k training rows criteo +0.0034, tail +0.0020, noisy +0.0003 and interactions +0.0000: two of its seeds gained (0.7967 and 0.7973 against 0.7939), the third lost (0.7877), because its second epoch still gained on the first by 0.001, so its fall-back went to weights that had already memorized (train AUC 0.83; its curve is below); at 800k rows criteo +0.0018, interactions +0.0018, noisy +0.0017 and tail -0.0015. FM gained +0.0003 to +0.0026 on all eight sets and LR -0.0000 to +0.0013; the schema-inferred runs at 300k moved by -0.0006 (interactions, whose third seed did the same) to +0.0029. At 80k training rows 5 lost 0.0066 on the noisy setting (3 seeds, study), so data below 100k rows keeps 2; no run has trained between 100k and 200k rows, where the threshold rises. On the tail setting 10 drops most of the table's rows (53 rows per table row at 1M become 296), which makes the data dense for the other auto settings: batch norm on, the larger init and embedding step; the tail's change at 1M is that switch and the threshold together. Keeping the sparse settings there (`sparse settings`: batch norm off, init_std 0.003) gained +0.0013 on the 1M tail's seed 1, but at 300k (`sparse settings at batch 1024`, with that batch's sparse embedding step 2e-3) seeds 1 and 2 moved by -0.0023 and +0.0008, so the density stays read from the table min_count leaves. The study's `min_count 2` rows are its defaults runs from before `auto` |
"""


PROTOCOL_TEXT = """## Protocol

- **deepfm**: `deepfm train <data flags> --seed S` with nothing else: its defaults choose the batch
  size, learning rates, regularization, epochs (early stopping on validation AUC) and everything
  else. `--model lr` and `--model fm` are the same code with parts switched off. "schema
  inferred": the same file with a header, no `--preset`, only `--label label`. Numbers come from
  the model folder's `metrics.json` (test metrics of the restored best epoch). Its `min count`
  column is the `min_count` `auto` resolved to (from the training rows); runs that recorded
  none are from before `auto` and used 2. Its `fresh tables` column says whether
  `reset_embeddings` resolved on; "–" marks runs from before it and `lr_decay` 0.03 were
  defaults, which trained without fresh tables at `lr_decay` 0.1.
- **Peers**: each data set is encoded once for all three (benchmarks/peers/encode.py): every
  field categorical, vocabularies fitted on the training part, values seen fewer than
  {min_count} times there and unseen values share one OOV id per field, a missing value is a value
  of its own, Criteo's counts log-bucketized (v > 2: floor(log(v)²)), a libFM field's value is its
  feature index. Each library's own DeepFM: embedding {embedding_dim}, MLP {hidden} ReLU, Adam lr {lr:g},
  validation AUC after every epoch, the best epoch's weights kept, patience {patience}, at most
  {max_epochs} epochs (`epochs` in the tables: how many ran, min–max over seeds). Batch {large_batch} from
  {small_train_rows:,} training rows up; below, every seed at {small_batches} and the batch size with the
  better mean validation AUC is kept. Everything else is the library's default:
  - **DeepCTR-Torch**: `DeepFM` with its defaults (L2 1e-5 on embeddings and the linear part, init std
    1e-4, no dropout, no batch norm), `compile('adam', 'binary_crossentropy', metrics=['auc'])`, `fit` with
    its own `EarlyStopping(monitor='val_auc', restore_best_weights=True)` callback. Its loss is summed
    over the batch, not averaged, and it casts ids through float32.
  - **FuxiCTR**: the model zoo's DeepFM rebuilt from the pip package's layers (the package ships no
    zoo) with the zoo's and `BaseModel`'s defaults: no regularization, dropout or batch norm, embeddings
    N(0, 1e-4), gradients clipped at norm 10, learning rate × 0.1 after each epoch without a better
    validation AUC (`reduce_lr_on_plateau`), and `BaseModel.fit`'s own early stopping, which reloads the
    best checkpoint.
  - **pytorch-fm**: `DeepFactorizationMachineModel` as the library builds it (batch norm after every
    hidden layer, first-order weights N(0, 1)), dropout 0.2 and Adam weight decay 1e-6 from its
    `examples/main.py` (the model has no default dropout), and that example's loop with its
    `EarlyStopper` (num_trials = patience), `BCELoss` on the sigmoid output.
- Train seconds and samples/s count the training loop only (not validation, checkpoints or
  preprocessing), summed over the epochs that ran.
"""
