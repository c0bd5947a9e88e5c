"""libFM files: ``label id:value id:value ...``, one-hot, the same number of features a line."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepfm.data.columns import first_false
from deepfm.data.source import Reader
from deepfm.errors import DataError

LIBFM_LINE = re.compile(rb"^\s*[-+]?\d+(\.\d*)?(\s+\d+:\S+)+\s*$")


class LibfmReader(Reader):
    """A libFM file as columns ``label, f1 .. fk``: the k-th feature of each line is field fk,
    its id the field's value (values must be 1: one categorical value per field)."""

    format = "libfm"
    signed_labels = True
    label_values = (-1.0, 1.0)
    one_hot = True

    def _open(self, column_names: tuple[str, ...] | list[str] | None, optional_label: str | None) -> None:
        self._skipped_lines: list[int] = []  # 1-based lines skipped, ascending
        self.first_line()  # raises on an empty file
        self.columns = ["label"]  # the feature columns f1..fk are known after the first line
        self.columns += [f"f{i}" for i in range(1, self._width() + 1)]

    def _restart(self) -> None:
        super()._restart()
        self._skipped_lines = []

    def locate(self, row: int) -> str:
        """The line of 0-based data row ``row``, past the lines skipped before it."""
        line = row + 1
        for skipped in self._skipped_lines:
            if skipped <= line:
                line += 1
        return f"line {line}"

    def _width(self) -> int:
        first = self.first_line()
        if not LIBFM_LINE.match(first):
            raise DataError(f"expected a libFM line 'label id:value ...', got {first[:80]!r}", path=self.name, line=1)
        return len(first.split()) - 1

    def _batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        """Every column (the caller selects): the label and the ids of f1..fk, as text."""
        width = len(self.columns) - 1
        reader = pacsv.open_csv(
            self.ref.readable(),
            read_options=pacsv.ReadOptions(column_names=["line"], block_size=self.options.block_size),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False),
        )
        row0 = 0
        for batch in reader:
            lines = pc.utf8_trim_whitespace(batch.column(0))
            parts = pc.split_pattern_regex(lines, r"\s+")
            lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
            wrong = np.flatnonzero(lengths != width + 1)
            if wrong.size:
                i = int(wrong[0])
                if self.options.on_bad_row != "skip":
                    raise DataError(
                        f"expected a label and {width} id:value features (as on line 1), "
                        f"got {int(lengths[i]) - 1 if lines[i].as_py() else 'an empty line'}",
                        path=self.name,
                        line=row0 + i + 1,
                    )
                keep = lengths == width + 1
                self.skipped += int((~keep).sum())
                self._skipped_lines.extend((row0 + np.flatnonzero(~keep) + 1).tolist())
                parts = parts.filter(pa.array(keep))
            flat = pc.list_flatten(parts).to_numpy(zero_copy_only=False).reshape(-1, width + 1)
            labels = flat[:, 0]
            pairs = pa.array(flat[:, 1:].ravel(), pa.string())
            kv = pc.split_pattern(pairs, ":", max_splits=1)
            ids = pc.list_element(kv, 0)
            values = pc.list_element(kv, 1)
            ok_values = pc.equal(values, "1")
            if not pc.all(ok_values).as_py():
                # Tolerate "1.0"; anything else is a value we cannot represent by field.
                as_num = pc.cast(values, pa.float64(), safe=False) if _all_floats(values) else None
                if as_num is None or not pc.all(pc.equal(as_num, 1.0)).as_py():
                    bad_at = first_false(ok_values if as_num is None else pc.equal(as_num, 1.0))
                    r, c = divmod(bad_at, width)
                    if wrong.size:  # rows were skipped in this batch: back to the file's row
                        r = int(np.flatnonzero(lengths == width + 1)[r])
                    raise DataError(
                        f"feature values must be 1 (one-hot libFM, one feature per field); got "
                        f"{values[bad_at].as_py()!r}. Convert weighted features to a table with numeric columns",
                        path=self.name,
                        line=row0 + r + 1,
                        field=f"f{c + 1}",
                    )
            arrays: dict[str, pa.Array] = {"label": pa.array(labels, pa.string())}
            ids_np = ids.to_numpy(zero_copy_only=False).reshape(-1, width)
            for c in range(width):
                arrays[f"f{c + 1}"] = pa.array(ids_np[:, c], pa.string())
            row0 += batch.num_rows
            yield pa.RecordBatch.from_pydict(arrays)


def _all_floats(values: pa.Array) -> bool:
    try:
        pc.cast(values, pa.float64())
        return True
    except pa.ArrowInvalid:
        return False
