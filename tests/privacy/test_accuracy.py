"""Accuracy on a labelled corpus (``bench.privacy``, smaller and with another seed than the
benchmark's): the issue's targets for the structured types."""

from __future__ import annotations

from bench.privacy import TARGETS, negatives, positives, score


def test_recall_and_precision_targets() -> None:
    """Recall >= 0.99 and precision >= 0.95 for emails, cards, IBANs, SSNs, phones, secrets."""
    found = score(positives(600, seed=7))
    false = score(negatives(300, seed=7))
    for entity in TARGETS:
        tp, fp = found.tp[entity], found.fp[entity] + false.fp[entity]
        assert tp >= 10, entity  # the corpus has enough of each to judge
        assert found.recall(entity) >= 0.99, (entity, found.missed[:5])
        assert tp / (tp + fp) >= 0.95, (entity, (found.false + false.false)[:5])

