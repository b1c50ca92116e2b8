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
        sparse.append(out.logits.masked_fill(~mask[..., None], float("-inf")).amax(1))
    return torch.cat(dense).numpy(), torch.cat(sparse)


def independent_dupmae_run(model_folder, records, queries, k=1000, topk=384):
    """{qid: [(docid, score), ...]} best first; BEIR-style, the hit equal to the query id removed."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
    model = BertForMaskedLM.from_pretrained(str(model_folder)).eval()
    texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in records]
    doc_dense, doc_logits = _encode(tokenizer, model, texts, 256)
    top = torch.topk(doc_logits, topk, dim=1)
    doc_sparse = torch.zeros_like(doc_logits).scatter_(1, top.indices, top.values).numpy()
    del doc_logits
    q_dense, q_sparse = _encode(tokenizer, model, list(queries.values()), 64)
    scores = q_dense @ doc_dense.T + q_sparse.numpy() @ doc_sparse.T
    run = {}
    for row, qid in enumerate(queries):
        order = np.argsort(-scores[row], kind="stable")[:k]
        run[qid] = [(records[i]["_id"], float(scores[row, i])) for i in order if records[i]["_id"] != qid]
    return run
