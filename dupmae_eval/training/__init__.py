"""Training DupMAE's two-part representation (fine-tuning; pre-training builds on it).

So far: the memory-bounded OT max-pool with gradients (`ot_pool`), the piece that both the
fine-tuning score (Eq. 12) and the pre-training bag-of-words loss need.
"""
