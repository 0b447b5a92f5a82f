"""Write tests/data/penguins_holes.csv: a small copy of the Palmer penguins' four numeric columns with holes.

Every 4th penguin and penguins 3 and 271 (88 rows) from ``palmerpenguins.load_penguins()`` (3 and 271 are the
data's two rows with every value missing), plus seeded partial holes (about 8% of the other cells). Missing cells are
written both ways the issue names: an empty cell in odd rows, ``NA`` in even rows (the first all-missing row is
``,,,``, the second ``NA,NA,NA``); one blank line after the 10th data row (so that the file's line numbers are not
the data rows' numbers + 2).

    python tests/data/make_penguins_holes.py
"""

from pathlib import Path

import numpy as np
import palmerpenguins

COLUMNS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def main(path=Path(__file__).with_name("penguins_holes.csv")) -> None:
    df = palmerpenguins.load_penguins()
    x = df[COLUMNS].to_numpy(float)[sorted(set(range(0, len(df), 4)) | {3, 271})]
    holes = np.random.default_rng(22).uniform(size=x.shape) < 0.08
    holes[np.isnan(x).all(axis=1)] = False
    holes[holes.all(axis=1)] = False  # the partial holes leave at least one value in a row
    x[holes] = np.nan
    lines = [",".join(COLUMNS)]
    for i, row in enumerate(x):
        na = "" if (i % 2 == 1) != (i > 10 and bool(np.isnan(row).all())) else "NA"
        lines.append(",".join(na if np.isnan(v) else f"{v:g}" for v in row))
        if i == 9:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print(f"{path}: {x.shape[0]} rows, {int(np.isnan(x).sum())} missing cells, "
          f"{int(np.isnan(x).all(axis=1).sum())} rows with every value missing")


if __name__ == "__main__":
    main()
