"""Privacy: finding sensitive values in what the gateway forwards, and what policy does with
them (``app.stages.privacy`` is the pipeline stage).

- ``detect``: the detectors (``Detector.scan``) and their entity types;
- ``presidio``: names and places by Microsoft Presidio's analyzer over an installed spaCy
  pipeline (the optional ``presidio`` extra; imported only when ``privacy.presidio`` is set);
- ``checks``: the validators behind them (Luhn, IBAN mod 97, SSN rules, entropy);
- ``placeholders``: typed placeholders out of requests and back into answers (``Vault``,
  ``StreamRestorer``);
- ``config``: the ``privacy:`` config sections; ``policy``: them compiled per config;
- ``walk``: the text parts of request and answer bodies.
"""
