"""An independent DupMAE implementation written from the paper's formulas, for the tests.

It uses transformers' own BertForMaskedLM and materialises the full logits tensor, so it shares
no code with the package: [CLS] last hidden state for the dense half; raw MLM logits max-pooled
over positions 1.. (padding out, [SEP] in), top-384 per document, for the sparse half;
score(q, d) = dense dot + sum over topk(d) of q[i] * d[i].
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer, BertForMaskedLM


def _encode(tokenizer, model, texts, max_length, batch_size=16):
    dense, sparse = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
        mask = batch["attention_mask"].bool().clone()
        mask[:, 0] = False
        dense.append(out.hidden_states[-1][:, 0])
        sparse.append(out.logits.masked_fill_(~mask[..., None], float("-inf")).amax(1))   # in place: 0.5 GB
    return torch.cat(dense).numpy(), torch.cat(sparse)


def independent_dupmae_run(model_folder, records, queries, k=1000, topk=384):
    """({qid: [(docid, score), ...]} best first, the hit equal to the query id removed (BEIR),
    {docid: gap between its topk-th and (topk+1)-th pooled logit})."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
    model = BertForMaskedLM.from_pretrained(str(model_folder)).eval()
    texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in records]
    doc_dense, doc_logits = _encode(tokenizer, model, texts, 256)
    top = torch.topk(doc_logits, topk + 1, dim=1)
    gaps = {r["_id"]: float(top.values[i, topk - 1] - top.values[i, topk]) for i, r in enumerate(records)}
    top = torch.topk(doc_logits, topk, dim=1)
    doc_sparse = torch.zeros_like(doc_logits).scatter_(1, top.indices, top.values).numpy()
    del doc_logits
    q_dense, q_sparse = _encode(tokenizer, model, list(queries.values()), 64)
    scores = q_dense @ doc_dense.T + q_sparse.numpy() @ doc_sparse.T
    run = {}
    for row, qid in enumerate(queries):
        order = np.argsort(-scores[row], kind="stable")[:k]
        run[qid] = [(records[i]["_id"], float(scores[row, i])) for i in order if records[i]["_id"] != qid]
    return run, gaps


def assert_runs_agree(run, reference, gaps, top=10, rtol=1e-5, atol=1e-3, boundary=1e-3):
    """Same top rankings; same scores, except where float noise of another batch layout flipped which
    entry a document keeps at its top-k boundary (its k-th and (k+1)-th logits within `boundary`)."""
    import numpy as np

    assert set(run) == set(reference)
    flipped = 0
    for qid, hits in reference.items():
        assert [d for d, _ in run[qid][:top]] == [d for d, _ in hits[:top]], qid
        ours = dict(run[qid])
        for docid, score in hits:
            if docid in ours and not np.isclose(ours[docid], score, rtol=rtol, atol=atol):
                assert gaps[docid] < boundary, (qid, docid, ours[docid], score, gaps[docid])
                flipped += 1
    total = sum(len(hits) for hits in reference.values())
    assert flipped <= 0.001 * total, f"{flipped} of {total} scores differ"
